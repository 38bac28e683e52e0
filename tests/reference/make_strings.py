#!/usr/bin/env python3
"""Writes tests/fixtures/text/strings.json: the strings the MiniLM tokenizer is compared on
(expected ids: tests/fixtures/text/token_ids.json, from `bert.py tokens`).

  python3 tests/reference/make_strings.py [OUT]    (default tests/fixtures/text/strings.json)

Deterministic: fixed lists plus a seeded random.Random (whose choice/shuffle/randrange are
stable across Python 3 versions); rerunning reproduces the file byte for byte. Standard
library only. Every string is valid Unicode without lone surrogates (so it is UTF-8 and a
Rust String); invisible characters are written as escapes in this source.
"""

import json
import random
import sys
from pathlib import Path

SEED = 20261202

PLAIN = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!",
    "Sentence embeddings map text to vectors.",
    "I can't believe it's not butter.",
    "She said, \"Don't do that,\" and left.",
    "The cat sat on the mat; the dog didn't.",
    "What time is it?",
    "Machine learning models run inside WebAssembly.",
    "unaffable",
    "Tokenization splits words into word pieces like ##ing.",
    "The children's books were on the top shelf.",
    "Rust, Python and WebAssembly.",
    "e.g. i.e. etc. vs. Mr. Mrs. Dr. St.",
    "He paid $3.50 for 2 coffees at 7:45 a.m.",
    "It's 100% true — no doubt.",
    "They're going to the store, aren't they?",
    "Colorless green ideas sleep furiously.",
    "To be, or not to be, that is the question.",
]

ACCENTS = [
    "café", "naïve résumé", "crème brûlée", "El niño comió piñata en España.",
    "Über die Brücke gehen wir zusammen; schön!", "Ångström and Åland", "façade",
    "São Paulo, Coração", "Dvořák's Ślęża and Łódź", "Ærøskøbing", "İstanbul ılık",
    # combining marks: e + U+0301, n + U+0303, a + U+0308 + U+0304, stacked marks
    "cafe\u0301", "man\u0303ana", "a\u0308\u0304", "Z\u0335\u0321a\u0336l\u0334g\u0337o\u0338",
    "ÉCOLE", "ÀÉÎÕÜ àéîõü", "ﬁ ﬂ ligatures", "Ⅻ ① ½ ² ™",
]

CJK = [
    "我爱北京天安门", "今天天气很好。", "机器学习和自然语言处理",
    "こんにちは世界", "カタカナとひらがな", "東京は日本の首都です。", "ｶﾀｶﾅ ＡＢＣ １２３",
    "안녕하세요 세계", "한국어 문장입니다.", "中文English混合text",
    "漢字かな交じり文", "㐀㐁 𠀀𠀁 (extension A and B)", "〆〇〻", "「引用」と『二重』",
]

EMOJI = [
    "I love pizza 🍕!", "😀😃😄😁", "👍🏽 thumbs up", "👨\u200d👩\u200d👧\u200d👦 family",
    "🏳️\u200d🌈 flag", "🇺🇸🇫🇷🇯🇵", "❤️ red heart", "🧑\u200d💻 technologist",
    "emoji🙂inside🙂words", "1️⃣ 2️⃣ #️⃣", "🤷\u200d♀️", "☃ ☕ ⚡",
]

URLS = [
    "https://example.com/path?q=1&lang=en#frag",
    "Visit http://www.example.org/index.html today.",
    "ftp://files.example.net/pub/file.tar.gz",
    "mailto:someone@example.com",
    "Contact john.doe+tag@example.co.uk for details.",
    "user_name@sub-domain.example.io",
    "www.github.com/owner/repo/blob/main/README.md",
    "C:\\Users\\Public\\Documents\\file.txt",
    "/usr/local/bin/python3 --version",
    "@mention #hashtag $CASHTAG",
]

PUNCT = [
    "!!!???", "...", "--", "—", "–", "?!?!", "((()))", "[[{{<<>>}}]]", "\"''\"", "***",
    "a...b", "wait—what?!", "hello!!!!!!!!", "¿Qué? ¡Sí!", "«guillemets» „Anführung“",
    "#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "・。、", "…", "‽", "§¶†‡",
]

NUMBERS = [
    "0", "42", "3.14159", "1,000,000", "-273.15", "1e-12", "2026-12-02", "+1 (555) 123-4567",
    "0x1F 0b1010 0o777", "12345678901234567890", "١٢٣ ٤٥٦", "१२३", "½ + ¼ = ¾", "v1.2.3-rc.4",
    "3rd 21st 100th", "π ≈ 3.14",
]

CASE = [
    "ALL CAPS SENTENCE", "MiXeD CaSe WoRdS", "camelCaseIdentifier", "snake_case_identifier",
    "SCREAMING_SNAKE_CASE", "iPhone eBay McDonald's", "HTTPServerError", "ΣΊΣΥΦΟΣ σίσυφος",
    "Straße STRASSE", "DŽ Dž dž (D + Ž)",
]

CONTROL = [
    "a\u0000b", "bell\u0007here", "zero\u200bwidth\u200bspace", "\ufeffbyte order mark",
    "soft\u00adhyphen", "\u0000", "\u0007\u0008\u001b", "line\u2028separator",
    "para\u2029graph", "\u200b", "\u00ad", "\ufeff", "word\u200cjoiner\u200d",
    "right\u200eleft\u200fmarks", "tab\tseparated\tvalues", "line one\nline two",
    "windows\r\nline end", "\x7fdelete", "\x85next line", "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space", "en\u2002em\u2003thin\u2009spaces", "\u001f\u001e\u001d",
    "\ue000 private use", "\ufffd replacement", "\U000e0041 tag char", "a\x85b",
    "a\u0378b unassigned code point", "\u01c4 \u01c5 \u01c6 (one character each)",
]

WHITESPACE = [
    "", " ", "  ", "\t", "\n", "\r\n", " \t\n ", "\u00a0", "\u3000", "\u2003\u2009",
    "   leading", "trailing   ", "  both  ",
]

SCRIPTS = [
    "Γειά σου Κόσμε", "Η γρήγορη καφέ αλεπού", "Привет, мир!", "Съешь же ещё этих мягких булок.",
    "مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "עברית נכתבת מימין לשמאל",
    "नमस्ते दुनिया", "हिन्दी भाषा", "สวัสดีชาวโลก", "ภาษาไทยไม่มีช่องว่าง",
    "ሰላም ዓለም", "Բարեւ աշխարհ", "გამარჯობა", "வணக்கம் உலகம்", "ສະບາຍດີ", "ᚠᚢᚦᚨᚱᚲ",
    "Tiếng Việt có dấu", "Zażółć gęślą jaźń",
]

MATH = [
    "∀x ∈ ℝ: x² ≥ 0", "∑ᵢ aᵢ = ∫₀¹ f(x) dx", "a ≠ b ≤ c ≥ d", "√2 ∞ ∂ ∇ ∆",
    "𝔸𝔹ℂ 𝒜ℬ 𝐀𝐁𝐂", "f: A → B, g ∘ f", "⊕ ⊗ ⊥ ∧ ∨ ¬", "E = mc²", "x₁ + x₂ = y³",
    "∮ ∯ ∰", "±×÷", "⟨ψ|φ⟩",
]

LONG_WORDS = [
    "a" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "x" * 100,  # exactly 100 characters: still WordPiece'd
    "z" * 99 + " short words after",
    "https://example.com/" + "abcdefghij" * 12,
    "ü" * 120,
    "自" * 150,  # CJK characters are split one by one, so never one long word
    "Supercalifragilisticexpialidocious " * 4,
    "0123456789" * 11,
]

VOCAB = (
    "time person year way day thing man world life hand part child eye woman place work week "
    "case point government company number group problem fact be have do say get make go know "
    "take see come think look want give use find tell ask work seem feel try leave call good "
    "new first last long great little own other old right big high different small large next "
    "early young important few public bad same able to of in for on with at by from up about "
    "into over after beneath river mountain algorithm tensor inference quickly silently "
    "unbelievable reconstruction photosynthesis café naïve Zürich 2026 3.5 e-mail o'clock "
    "well-known state-of-the-art"
).split()
PUNCT_TAIL = [".", ",", ";", ":", "!", "?", "", "", "", "", "", ""]


def generated(rng):
    """Seeded sentences of varied length (5..60 words) and one text of 5,000+ words."""
    out = []
    for _ in range(40):
        n = rng.randrange(5, 61)
        words = [rng.choice(VOCAB) + rng.choice(PUNCT_TAIL) for _ in range(n)]
        words[0] = words[0].capitalize()
        out.append(" ".join(words))
    paragraph = (
        "The river bends beneath the old mountain, and every morning the fishermen count their "
        "nets twice. Nobody remembers who built the bridge; some say a company from Zürich, "
        "others swear it was the government of 1926. Inference is quick, training is slow, "
        "and the tensors never sleep. Children's laughter, naïve questions, café debates: all "
        "of it part of the same long week."
    ).split()
    words = []
    while len(words) < 5200:
        chunk = paragraph[:]
        rng.shuffle(chunk)
        words += chunk
    text = []
    for i, w in enumerate(words):
        text.append(w + ("\n\n" if i % 97 == 96 else " "))
    out.append("".join(text).strip())
    return out


def build():
    rng = random.Random(SEED)
    strings = (PLAIN + ACCENTS + CJK + EMOJI + URLS + PUNCT + NUMBERS + CASE + CONTROL
               + WHITESPACE + SCRIPTS + MATH + LONG_WORDS + generated(rng))
    for s in strings:
        s.encode("utf-8")  # raises on a lone surrogate
    return strings


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else
               Path(__file__).resolve().parents[2] / "tests/fixtures/text/strings.json")
    strings = build()
    assert len(strings) >= 200, len(strings)
    assert max(len(s.split()) for s in strings) >= 5000
    out.parent.mkdir(parents=True, exist_ok=True)
    # One string per line; non-ASCII kept readable, control characters escaped by json.
    text = "[\n" + ",\n".join(json.dumps(s, ensure_ascii=False) for s in strings) + "\n]\n"
    out.write_text(text, encoding="utf-8")
    print(f"{out}: {len(strings)} strings, {len(text.encode('utf-8'))} bytes, longest "
          f"{max(len(s.split()) for s in strings)} words")


if __name__ == "__main__":
    main()
