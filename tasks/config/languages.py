"""Language codes the offline language ID (fastText lid.176) can write: the only values `languages` keys may hold.

Kept as a constant so loading params.yaml needs no model; tests/test_config.py checks it against the
labels of the shipped `lid.176.ftz`.
"""
from __future__ import annotations

LID176 = tuple("""
af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv cy da de
diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo
io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms
mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn
sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf
yi yo yue zh
""".split())

# English names (as Gutenberg headers and users write them) → lid.176 code
NAMES = {"english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it", "dutch": "nl",
         "portuguese": "pt", "latin": "la", "finnish": "fi", "swedish": "sv", "danish": "da", "norwegian": "no",
         "icelandic": "is", "greek": "el", "russian": "ru", "chinese": "zh", "japanese": "ja", "polish": "pl",
         "hungarian": "hu", "esperanto": "eo", "catalan": "ca"}


def unknown_languages(codes) -> str | None:
    """None when every code is a lid.176 label; else a message naming the bad ones, a guess and the allowed codes."""
    bad = [c for c in codes if c not in LID176]
    if not bad:
        return None
    guesses = {c: NAMES.get(str(c).lower()) or (str(c).lower() if str(c).lower() in LID176 else None) for c in bad}
    hint = ", ".join(f"{c!r} → {g!r}" for c, g in guesses.items() if g)
    return (f"holds {bad}, not lid.176 language codes{f' (did you mean {hint}?)' if hint else ''}; "
            f"codes: {', '.join(LID176)}")
