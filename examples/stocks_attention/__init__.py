"""Stocks with a small attention network: next-week volatility regime and next-day direction."""
