"""The report's sample browser at scale: a synthetic run folder of N records (default
100,000: evolve outputs, kept and rejected, with lineage and instruction chains), then
the time and memory `write_report` takes, the page's size and its sidecar chunks; with
Debian's chromium and playwright, the time the page takes to load every row, to filter
by a reason, to search and to open a record.

    .venv/bin/python bench/report_browser.py [--records 100000] [--keep DIR] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from evoforge import write_report

WORDS = (
    "harbour glacier orchard comet bridge violin desert forest river canyon meadow lantern "
    "copper marble falcon ember tundra lagoon summit prairie quartz willow thunder saffron"
).split()
OPS = ["deepen", "constraints", "concretizing", "reasoning", "breadth"]
REASONS = ["prompt_leak", "too_long", "not_evolved", "refusal", "duplicate"]


def build(folder: Path, n: int) -> None:
    """``evolved.jsonl`` (90% of n, two rounds each) and its rejects (10%), as evolve
    writes them, with a manifest."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    kept = folder / "evolved.jsonl"
    rejects = folder / "evolved.rejects.jsonl"
    with kept.open("w") as out, rejects.open("w") as bad:
        for i in range(n):
            seed = "Describe " + " ".join(rng.choice(WORDS) for _ in range(30)) + "."
            ops = [rng.choice(OPS), rng.choice(OPS)]
            chain = [seed, seed + " Add one constraint."]
            lineage = []
            for round_, op in enumerate(ops, 1):
                lineage.append(
                    {
                        "op": f"evolve_{op}",
                        "round": round_,
                        "model": "bench",
                        "prompt_id": f"evol_{op}@v1",
                        "prompt_hash": "0" * 16,
                    }
                )
                lineage.append({"op": "answer", "round": round_, "model": "bench",
                                "prompt_id": "answer@v1", "prompt_hash": "1" * 16})  # fmt: skip
            record = {
                "id": f"s{i}/r1/r2", "kind": "instruction",
                "instruction": chain[1] + " Add one more step.",
                "output": " ".join(rng.choice(WORDS) for _ in range(80)),
                "parent_id": f"s{i}/r1", "lineage": lineage,
                "meta": {"evol": {"op": ops[1], "round": 2}, "instruction_chain": chain},
            }  # fmt: skip
            if i % 10 == 9:
                reason = REASONS[i // 10 % len(REASONS)]
                row = {"id": record["id"], "reason": reason, "detail": f"{reason} (bench)",
                       "record": record, "step": f"evolver.{ops[1]}"}  # fmt: skip
                bad.write(json.dumps(row) + "\n")
            else:
                out.write(json.dumps(record) + "\n")
    manifest = {"command": "evolve", "files": {"out": str(kept)}, "kind": "instruction"}
    (folder / "evolved.manifest.json").write_text(json.dumps(manifest))


def browse(page_path: Path) -> dict[str, float]:
    """Seconds for the page to hold every row, to filter by a reason, search, open a row."""
    from playwright.sync_api import sync_playwright

    times = {}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(page_path.as_uri(), timeout=600_000)
        page.wait_for_selector("body[data-samples]", timeout=600_000)
        times["load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        page.select_option("#sb-reason", "refusal")
        times["filter_s"] = time.perf_counter() - start
        start = time.perf_counter()
        page.fill("#sb-search", "s12349/r1/r2")
        page.wait_for_function("document.querySelectorAll('#sb-table tbody tr').length <= 1")
        times["search_s"] = time.perf_counter() - start
        page.fill("#sb-search", "")
        start = time.perf_counter()
        page.click("#sb-table tbody tr >> nth=0")
        page.wait_for_selector("#sb-detail[data-id]")
        times["open_s"] = time.perf_counter() - start
        times["js_heap_mb"] = page.evaluate("performance.memory.usedJSHeapSize") / 2**20
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build the folder here and keep it")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    folder = args.keep or tmp / "run"
    try:
        start = time.perf_counter()
        build(folder, args.records)
        print(f"records: {args.records:,} (built in {time.perf_counter() - start:.1f} s)")
        inputs = sum(p.stat().st_size for p in folder.iterdir())
        print(f"run folder: {inputs / 2**20:.1f} MiB")
        start = time.perf_counter()
        paths = write_report(folder)
        took = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"write_report: {took:.1f} s, peak RSS {peak:.0f} MiB")
        print(f"report.html: {paths['html'].stat().st_size / 2**20:.2f} MiB")
        sidecar = folder / "report-data"
        if sidecar.exists():
            files = list(sidecar.iterdir())
            size = sum(p.stat().st_size for p in files)
            print(f"report-data/: {len(files)} files, {size / 2**20:.1f} MiB")
        if not args.no_browser and (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
            for name, value in browse(paths["html"]).items():
                print(f"browser {name}: {value:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
