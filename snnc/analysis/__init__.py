"""Analyses of a converted network: why accuracy moved (``diagnose``), what it costs
(``energy``), and the HTML report that shows both (``report``)."""
