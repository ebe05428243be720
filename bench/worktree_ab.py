"""A benchmark script run on a git revision's checkout and on this one, alternately.

For the benchmarks that cannot import two brownouts in one process (the adapters
need their client libraries and servers, and a baseline's own bench script may
call an API the working tree renamed): ``--baseline REV`` gets a detached
worktree of ``REV`` with its own ``.venv`` (created on first use with
``pip install -e '.[dev]'``, ~1-2 minutes, then reused), and the same script with
the same arguments runs ``--pairs`` times in each tree, alternating ABBA (new,
base, base, new, ...) so that a drift of the machine lands on both. Each tree
runs its own copy of the script, on its own brownout. Every run writes
``--json``; the summary gives, per cell, the median over all runs of each run's
median (the paired ratio where the script records one, else ns per operation)
for both trees, and the full outputs are kept in ``--out``.

    .venv/bin/python bench/worktree_ab.py --baseline 8dda391 -- bench/adapter_overhead.py
    .venv/bin/python bench/worktree_ab.py --baseline 8dda391 --pairs 1 \
        -- bench/adapter_overhead.py --quick

The baseline worktree is ``--tree`` (default ``$TMPDIR/brownout-baseline-<sha12>``);
remove it with ``git worktree remove --force PATH`` when done.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
except ImportError:  # imported as bench.worktree_ab
    from bench import _harness as h

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent


def git(*args: str, cwd: Path = CHECKOUT) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def baseline_tree(rev: str, tree: Path | None) -> Path:
    """A detached worktree at ``rev`` with its own venv (made once, then reused)."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = tree or Path(tempfile.gettempdir()) / f"brownout-baseline-{sha[:12]}"
    if not path.exists():
        print(f"worktree of {sha[:12]} at {path} ...", file=sys.stderr, flush=True)
        git("worktree", "add", "--detach", str(path), sha)
    elif git("rev-parse", "HEAD", cwd=path) != sha:
        raise SystemExit(f"worktree_ab: {path} is not at {rev} ({sha[:12]}): give another --tree")
    python = path / ".venv" / "bin" / "python"
    if not python.exists():
        print(f"venv in {path} (pip install -e '.[dev]') ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path / ".venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", ".[dev]"], cwd=path, check=True
        )
    return path


def figures(data: dict[str, Any]) -> dict[tuple[str, str], float]:
    """One figure per cell of a run's JSON: the median paired ratio where the script
    records one (and the client's CPU ns per operation where it records that), else the
    median ns per operation."""
    out: dict[tuple[str, str], float] = {}
    for kind in ("cells", "own_cost"):
        for cell in data.get(kind, []):
            key = (str(cell.get("scenario", cell.get("operation", kind))), str(cell["label"]))
            if cell.get("paired_ratio"):
                out[(f"{key[0]} (paired ratio)", key[1])] = statistics.median(cell["paired_ratio"])
                if cell.get("cpu_ns_per_op"):
                    out[(f"{key[0]} (CPU ns/op)", key[1])] = statistics.median(
                        cell["cpu_ns_per_op"]
                    )
            elif cell.get("ns_per_op"):
                out[(f"{key[0]} (ns/op)", key[1])] = statistics.median(cell["ns_per_op"])
            elif "median_ns" in cell:
                out[(f"{key[0]} (ns/op)", key[1])] = float(cell["median_ns"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--baseline", required=True, help="git revision to compare against")
    p.add_argument("--pairs", type=int, default=2, help="runs per tree (default 2, ABBA)")
    p.add_argument("--tree", type=Path, default=None, help="the baseline's worktree")
    p.add_argument("--out", type=Path, default=None, help="keep every run's output here")
    p.add_argument("script", help="bench script, relative to the checkout")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    args = p.parse_args(argv)
    script_args = [a for a in args.args if a != "--"]
    base = baseline_tree(args.baseline, args.tree)
    trees = {"new": CHECKOUT, "base": base}
    out = args.out or Path(tempfile.mkdtemp(prefix="brownout-worktree-ab-"))
    out.mkdir(parents=True, exist_ok=True)
    order = [("new", "base"), ("base", "new")]
    runs: dict[str, list[dict[tuple[str, str], float]]] = {"new": [], "base": []}
    failed: list[str] = []
    started = time.monotonic()
    for i in range(args.pairs):
        for side in order[i % 2]:
            tree = trees[side]
            stem = out / f"{i + 1}-{side}"
            cmd = [
                str(tree / ".venv" / "bin" / "python"),
                args.script,
                *script_args,
                "--json",
                str(stem.with_suffix(".json")),
            ]
            print(
                f"[{time.monotonic() - started:6.0f} s] run {i + 1}/{args.pairs} {side}: "
                f"{' '.join(cmd)} (in {tree})",
                file=sys.stderr,
                flush=True,
            )
            with stem.with_suffix(".txt").open("w") as log:
                rc = subprocess.run(
                    cmd, cwd=tree, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
                ).returncode
            if rc != 0:  # a failed check (exit 1) still writes its JSON; a failed start not
                failed.append(f"{stem.name}: exit status {rc} (see {stem}.txt)")
                if not stem.with_suffix(".json").exists():
                    print(f"worktree_ab: {failed[-1]}", file=sys.stderr)
                    return rc
            runs[side].append(figures(json.loads(stem.with_suffix(".json").read_text())))
    rows = []
    for key in runs["new"][0]:
        if key not in runs["base"][0]:
            continue
        b = statistics.median(r[key] for r in runs["base"])
        n = statistics.median(r[key] for r in runs["new"])
        rows.append([key[0], key[1], f"{b:,.3f}", f"{n:,.3f}", f"{n / b:.3f}"])
    print(h.header_line(h.machine_info()))
    print(
        f"\n`{args.script} {' '.join(script_args)}` on {args.baseline} ({base}) and on this "
        f"checkout, {args.pairs} run(s) each, ABBA; {time.monotonic() - started:.0f} s; "
        f"every output in {out}. Each figure is the median over runs of a run's median; "
        "a paired ratio is the script's own (in adapter_overhead.py: throughput against "
        "the raw client in the same round, higher is better), ns/op lower is better\n"
    )
    print(h.markdown_table(["cell", "label", "base", "new", "new / base"], rows))
    if failed:  # the script's own checks failed: its figures may not mean what they say
        print("\nruns whose checks failed:", *failed, sep="\n- ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
