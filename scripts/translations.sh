#!/usr/bin/env bash
# Keep the translation catalogue in step with the code.
#
#   scripts/translations.sh update   extract messages.pot, merge it into every .po, compile the .mo
#   scripts/translations.sh check    exit 1 if any message is missing, untranslated or fuzzy
#
# After `update`, translate the new (empty) msgstr entries in
# pointsmart/translations/zh_Hans_CN/LC_MESSAGES/messages.po and run `update` again to compile.
set -eu
cd "$(dirname "$0")/.."
dir=pointsmart/translations
pot=$dir/messages.pot

extract() {
    # Keywords: keep in step with KEYWORDS in tests/test_i18n.py.
    pybabel -q extract -F babel.cfg --no-default-keywords -k _ -k gettext -k ngettext:1,2 \
        -k _l -k lazy_gettext -k lazy_ngettext:1,2 -c TRANSLATORS: --sort-by-file --add-location file \
        --project PointSmart --copyright-holder "PointSmart contributors" --no-wrap -o "$1" .
}

case "${1:-}" in
update)
    extract "$pot"
    pybabel -q update -i "$pot" -d "$dir" --no-wrap --no-fuzzy-matching --ignore-obsolete
    pybabel -q compile -d "$dir" --statistics
    ;;
check)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    extract "$tmp/messages.pot"
    python - "$tmp/messages.pot" "$dir" <<'PY'
import sys
from pathlib import Path
from babel.messages.pofile import read_po

with open(sys.argv[1], "rb") as fh:
    wanted = [m.id for m in read_po(fh) if m.id]
bad = 0
for po in sorted(Path(sys.argv[2]).glob("*/LC_MESSAGES/messages.po")):
    with po.open("rb") as fh:
        catalog = read_po(fh)
    for msgid in wanted:
        m = catalog.get(msgid)
        if m is None or m.fuzzy or not all(m.string if isinstance(m.string, tuple) else [m.string]):
            print(f"{po}: untranslated: {msgid!r}")
            bad += 1
sys.exit(1 if bad else 0)
PY
    ;;
*)
    sed -n '2,9s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
