"""Open report pages in headless Chromium and check what a reader gets: every plot decodes,
no console errors; save a screenshot. Usage:
``python benchmarks/report/render_check.py out/report/vgg_bn.report/index.html [--screenshot docs/img/report.png]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from snnc.analysis.report import check_rendering  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pages", nargs="+")
    ap.add_argument("--screenshot", default=None, help="PNG of the first page")
    ap.add_argument("--viewport-only", action="store_true", help="screenshot the first screen, not the whole page")
    args = ap.parse_args()
    ok = True
    for i, page in enumerate(args.pages):
        seen = check_rendering(page, screenshot=args.screenshot if i == 0 else None, full_page=not args.viewport_only)
        good = not seen["errors"] and seen["images"] and all(im["width"] > 0 for im in seen["images"])
        ok &= bool(good)
        print(json.dumps({"page": page, "ok": bool(good), **seen}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
