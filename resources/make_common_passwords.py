"""Generate resources/common_passwords.txt, the list of refused common passwords (issue 11).

    python resources/make_common_passwords.py            # rewrite the list
    python resources/make_common_passwords.py --check    # exit 1 if the shipped list differs

No package in the build environment ships a password list, so the list is generated,
deterministically (no randomness, no network), from the patterns that dominate published
breach-corpus top lists (RockYou, the NCSC "100k" list, SecLists):

* keyboard walks (qwerty, asdf, 1qaz2wsx, 1q2w3e4r, zxcvbnm, ...) with repeats and suffixes;
* digit runs: ascending and descending sequences, every digit repeated, pairs repeated
  (12121212), years and dates (ddmmyyyy, mmddyyyy, yyyymmdd for 1950-2030 would be 80,000 lines,
  so only the first of each month and the years 1950-2030 doubled are kept);
* common words and names (and hospital words: a site's staff pick them) with the suffixes
  people add: digits, years 1950-2030, "!", "123!", "@123", "#1", and simple leetspeak;
* repeated characters (aaaaaaaa) and repeated short words (abcabcabc).

Lower case only: the check lower-cases the password first. One password per line, sorted,
after a comment header. The policy also strips leading and trailing digits and symbols before
looking a password up, so "Football1987!" is refused through "football".
"""
from __future__ import annotations

import string
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "common_passwords.txt"

WORDS = """
password passw0rd pass letmein welcome admin administrator root user login qwerty monkey dragon
football baseball basketball soccer hockey iloveyou sunshine princess shadow master michael
superman batman trustno1 whatever freedom starwars computer internet secret access hello
charlie donald jordan harley ranger hunter buster thomas tigger robert soccer killer george
andrew michelle jessica pepper daniel matthew joshua ashley amanda jennifer nicole chelsea
summer winter spring autumn flower orange banana apple cookie cheese chocolate coffee
purple yellow silver golden diamond heaven angel lovely loveme family friends forever
maggie ginger buddy bailey cooper lucky mickey minnie snoopy pokemon naruto matrix
mustang corvette ferrari porsche mercedes yamaha harley thunder lightning phoenix eagle
tiger lion wolf falcon dolphin butterfly rainbow liverpool arsenal chelsea barcelona
madrid united america canada london paris berlin england france germany
changeme default guest test testing temp temporary service support system server
office company business manager security network database backup oracle windows
linux apple samsung google microsoft facebook twitter youtube
hospital doctor nurse medical medicine health patient clinic radiology radiologist xray
imaging scanner surgery emergency pharmacy cardiology nursing physician resident
hello123 iloveu babygirl princess1 sweetheart darling honey sweety kitten puppy
jesus christ god angel1 blessed faith grace hope love peace
qwerty123 abc123 abcdef abcdefg abcdefgh letmein1 welcome1 password1
""".split()

NAMES = """
james john robert michael william david richard joseph thomas charles christopher daniel
matthew anthony mark donald steven paul andrew joshua kenneth kevin brian george timothy
mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty
margaret sandra ashley kimberly emily donna michelle carol amanda melissa deborah stephanie
anna maria laura julia sophie emma olivia chloe lucy grace hannah alex sam max ben tom
""".split()

WALKS = """
qwerty qwertyu qwertyui qwertyuiop asdf asdfg asdfgh asdfghj asdfghjk asdfghjkl zxcv zxcvb
zxcvbn zxcvbnm qazwsx qazwsxedc 1qaz2wsx 1qaz2wsx3edc 1q2w3e4r 1q2w3e4r5t 1q2w3e 1q2w3e4r5t6y
zaq12wsx zaq1zaq1 !qaz@wsx qweasd qweasdzxc qwer1234 asdf1234 zxcv1234 1234qwer 1234asdf
q1w2e3r4 q1w2e3r4t5 a1s2d3f4 poiuytrewq lkjhgfdsa mnbvcxz ytrewq azerty azertyuiop qwertz
qwertzuiop 1234qwerty qwerty12345 147258369 159357 159753 741852963 963852741 123qwe 123qweasd
""".split()

SUFFIXES = ["", "1", "12", "123", "1234", "12345", "123456", "!", "1!", "12!", "123!", "@123", "#1",
            "01", "007", "69", "99", "00", "11", "22", "77", "88", "2"]
YEARS = [str(y) for y in range(1950, 2031)]
LEET = str.maketrans({"a": "@", "o": "0", "e": "3", "i": "1", "s": "$"})
LEET_SOFT = str.maketrans({"a": "@", "o": "0", "e": "3", "i": "1"})


def generate() -> list[str]:
    out: set[str] = set()
    bases = list(dict.fromkeys(WORDS + NAMES + WALKS))
    for w in bases:
        for suffix in SUFFIXES:
            out.add(w + suffix)
        for y in YEARS:
            out.add(w + y)
            out.add(w + y[2:])
        out.add(w.translate(LEET))
        out.add(w.translate(LEET) + "1")
        out.add(w.translate(LEET_SOFT))
        out.add(w.translate(LEET_SOFT) + "1")
        out.add(w + w)
        out.add(w[::-1])
    digits = "0123456789"
    for n in range(4, 13):
        for start in range(10):
            seq = "".join(digits[(start + i) % 10] for i in range(n))
            out.add(seq)
            out.add(seq[::-1])
    for d in digits:
        for n in range(4, 17):
            out.add(d * n)
    for c in string.ascii_lowercase:
        for n in range(4, 17):
            out.add(c * n)
    for a in digits + string.ascii_lowercase:
        for b in digits + string.ascii_lowercase:
            if a != b:
                out.add((a + b) * 4)
                out.add((a + b) * 5)
    for short in ("abc", "xyz", "qwe", "asd", "zxc", "123", "321", "111", "love", "pass", "test", "abcd"):
        for n in (2, 3, 4):
            out.add(short * n)
    for y in YEARS:
        out.add(y + y)
        for m in range(1, 13):
            out.add(f"01{m:02d}{y}")   # ddmmyyyy
            out.add(f"{m:02d}01{y}")   # mmddyyyy
            out.add(f"{y}{m:02d}01")   # yyyymmdd
    return sorted(p for p in out if p and "\n" not in p)


HEADER = """# RadAssist: common passwords that the password policy refuses (lower case, one per line).
# Generated deterministically by resources/make_common_passwords.py from well-known patterns
# (keyboard walks, digit runs, dates, common words and names with years and suffixes,
# leetspeak, repeated characters). Do not edit by hand: edit the generator and rerun it.
"""


def render() -> str:
    return HEADER + "\n".join(generate()) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs from the generator: rerun it")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines()) - HEADER.count(chr(10))} passwords to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
