"""Regenerate the shipped samples in lightning_ssb/data/samples/ from shared/data.

    python -m lightning_ssb.data.make_samples [--shared ../shared/data] [--out DIR]

Outputs are byte-for-byte reproducible (gzip with mtime 0, sorted JSON keys where the
order does not matter). See samples/ATTRIBUTION.md for sources and licences.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
from pathlib import Path

WIKI_SOURCE = "enwiki_2015_wikiextractor_AA.txt.gz"
WIKI_ARTICLES = 3000  # first non-empty articles of the AA file
WIKI_CHARS = 1500  # article text kept (cut at a space); ~300 WordPiece tokens, > the 128 used
FEWREL_SOURCE = "fewrel_train64x150.json.gz"
FEWREL_PER_RELATION = 50  # first instances of each of the 64 relations; the quick start uses 40/10
VOCAB = "bert-base-uncased-vocab.txt"

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _write_gzip(path: Path, data: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    path.write_bytes(buf.getvalue())


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut > 0 else limit]


def wikipedia_sample(source: Path, articles: int = WIKI_ARTICLES, chars: int = WIKI_CHARS) -> str:
    """The first ``articles`` non-empty articles, WikiExtractor format, text cut to ``chars``."""
    out: list[str] = []
    header: str | None = None
    lines: list[str] = []
    with gzip.open(source, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("<doc "):
                header, lines = line, []
            elif line == "</doc>" and header is not None:
                title, body = (lines[0], lines[1:]) if lines else ("", [])
                text = _cut("\n".join(body).strip(), chars)
                if text:
                    out.append(f"{header}\n{title}\n\n{text}\n</doc>\n")
                    if len(out) == articles:
                        break
                header = None
            elif header is not None:
                lines.append(line)
    return "".join(out)


def fewrel_sample(source: Path, per_relation: int = FEWREL_PER_RELATION) -> dict:
    with gzip.open(source, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return {pid: instances[:per_relation] for pid, instances in data.items()}  # file order kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="where to write the samples")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    wiki = wikipedia_sample(args.shared / WIKI_SOURCE)
    _write_gzip(args.out / "enwiki_sample.txt.gz", wiki.encode("utf-8"))

    fewrel = fewrel_sample(args.shared / FEWREL_SOURCE)
    _write_gzip(args.out / "fewrel_sample.json.gz", json.dumps(fewrel, ensure_ascii=False).encode("utf-8"))

    pid2name = json.loads((args.shared / "pid2name.json").read_text(encoding="utf-8"))
    subset = {pid: pid2name[pid] for pid in fewrel}
    (args.out / "pid2name.json").write_text(json.dumps(subset, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    shutil.copyfile(args.shared / VOCAB, args.out / VOCAB)
    for name in ("enwiki_sample.txt.gz", "fewrel_sample.json.gz", "pid2name.json", VOCAB):
        print(f"{name}: {(args.out / name).stat().st_size:,} bytes")
    print(f"{wiki.count('</doc>')} articles; {len(fewrel)} relations x {FEWREL_PER_RELATION} instances")


if __name__ == "__main__":
    main()
