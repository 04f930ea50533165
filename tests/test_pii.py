"""The PII scrubber (py_engine/data/pii.py) on a labelled corpus (tests/pii_corpus.py) and
against reference validators we did not write: libphonenumber (phonenumbers) formats random
valid numbers of many countries, python-stdnum checks Luhn and IBAN mod-97.

Bounds (a finding counts only with its exact type and span): on the tuning corpus and on the
held-out lines, precision and recall >= 0.95 overall and >= 0.9 for every type; libphonenumber's
numbers are found, exactly, in >= 0.99 of international and E.164 layouts of 16 countries and
national layouts of the countries claimed (US, GB, FR, DE, IN).

Run: .venv/bin/python -m pytest tests/test_pii.py -q -s    (-s prints the tables)
"""

import ipaddress
import random

import phonenumbers
import pytest
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn
from stdnum.iso7064 import mod_97_10

import pii_corpus
from py_engine.data.pii import (PII_TYPES, PiiConfig, find_pii, iban_checksum_ok, luhn_ok,
                                scrub_pii)


def iban_valid(number):
    """stdnum's IBAN check: mod-97 and the registry's layout for the country (the national
    check digits some countries add on top are no part of the IBAN standard)."""
    try:
        std_iban.validate(number, check_country=False)
    except ValueError:
        return False
    return True


def find(text):
    return [(m.type, m.start, m.end) for m in find_pii(text)]


@pytest.mark.parametrize("name, lines", [("tuning corpus", pii_corpus.corpus()),
                                         ("held-out lines", pii_corpus.heldout_lines())])
def test_precision_and_recall_on_labelled_text(name, lines):
    counts = pii_corpus.scores(lines, find)
    print(f"\n{name}: {len(lines)} lines\n{pii_corpus.table(lines, find)}")
    wrong = pii_corpus.mistakes(lines, find)[:5]
    for kind, (tp, fp, fn) in counts.items():
        precision, recall = pii_corpus.precision_recall(tp, fp, fn)
        bound = 0.95 if kind == "all" else 0.9
        assert precision >= bound and recall >= bound, (kind, precision, recall, wrong)
    assert set(counts) == set(PII_TYPES) | {"all"}       # every type is in the corpus


def test_corpus_answers_agree_with_reference_validators():
    lines = pii_corpus.corpus() + pii_corpus.heldout_lines()
    for number, region in pii_corpus.PHONES:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number, region)), number
    regions = ("US", "GB", "FR", "DE", "IN", "ES")
    for text, gold in lines:
        for kind, a, b in gold:
            value = text[a:b]
            if kind == "phone":
                assert any(phonenumbers.is_valid_number(phonenumbers.parse(value, r))
                           for r in regions), value
            elif kind == "card":
                assert std_luhn.is_valid(value.replace(" ", "").replace("-", "")), value
            elif kind == "iban":
                assert iban_valid(value), value
            elif kind == "ip":
                ipaddress.ip_address(value)
    for value in pii_corpus.LUHN_FAILURES:
        assert not std_luhn.is_valid(value.replace(" ", "").replace("-", "")), value
    for value in pii_corpus.IBAN_FAILURES:
        assert not iban_valid(value), value


def test_luhn_and_mod97_agree_with_stdnum():
    rng = random.Random()
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 19)))
        assert luhn_ok(digits) == std_luhn.is_valid(digits), digits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    for _ in range(3000):
        bban = "".join(rng.choice(alphabet) for _ in range(rng.randint(11, 30)))
        country = rng.choice(["DE", "FR", "GB", "NL", "IT", "ES"])
        check = mod_97_10.calc_check_digits(bban + country)
        if rng.random() < 0.5:
            check = rng.choice([f"{k:02d}" for k in range(100) if f"{k:02d}" != check])
        number = country + check + bban
        assert iban_checksum_ok(number) == (mod_97_10.checksum(bban + country + check) == 1)


def _random_iban(rng, country, length):
    bban = "".join(rng.choice("0123456789") for _ in range(length - 4))
    return country + mod_97_10.calc_check_digits(bban + country) + bban


def test_random_valid_ibans_and_cards_are_found_and_altered_ones_are_not():
    rng = random.Random(7)
    numeric = {"DE": 22, "FR": 27, "ES": 24, "PL": 28, "BE": 16, "AT": 20, "CH": 21,
               "SE": 24, "NO": 15, "DK": 18, "FI": 18, "PT": 25}
    for _ in range(200):
        country = rng.choice(sorted(numeric))
        number = _random_iban(rng, country, numeric[country])
        assert iban_valid(number)
        spaced = " ".join(number[k:k + 4] for k in range(0, len(number), 4))
        for written in (number, spaced):
            text = f"Wire it to {written}, thanks."
            assert find(text) == [("iban", 11, 11 + len(written))], text
        k = rng.randrange(4, len(number))
        altered = number[:k] + str((int(number[k]) + rng.randint(1, 9)) % 10) + number[k + 1:]
        assert not iban_valid(altered)
        assert all(t != "iban" for t, _, _ in find(f"Wire it to {altered}, thanks.")), altered
    for _ in range(300):
        body = rng.choice("3456") + "".join(rng.choice("0123456789") for _ in range(14))
        number = body + std_luhn.calc_check_digit(body)
        spaced = " ".join(number[k:k + 4] for k in range(0, 16, 4))
        for written in (number, spaced, spaced.replace(" ", "-")):
            text = f"card: {written} exp 10/29"
            assert find(text) == [("card", 6, 6 + len(written))], text
        wrong = number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)
        assert not std_luhn.is_valid(wrong)
        assert find(f"card: {wrong} exp 10/29") == []


def _valid_numbers(rng, region, n):
    """n random numbers that libphonenumber calls valid in region: its example mobile and
    fixed-line numbers with their trailing digits drawn again."""
    kinds = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
    examples = [phonenumbers.example_number_for_type(region, kind) for kind in kinds]
    out = []
    while len(out) < n:
        national = str(rng.choice(examples).national_number)
        k = rng.randint(3, max(3, len(national) - 3))
        national = national[:-k] + "".join(rng.choice("0123456789") for _ in range(k))
        number = phonenumbers.PhoneNumber(country_code=examples[0].country_code,
                                          national_number=int(national))
        if phonenumbers.is_valid_number(number):
            out.append(number)
    return out


def test_phone_numbers_as_libphonenumber_writes_them():
    rng = random.Random(3)
    fmt = phonenumbers.PhoneNumberFormat
    layouts = {"international": fmt.INTERNATIONAL, "e164": fmt.E164, "national": fmt.NATIONAL}
    regions = ["US", "GB", "FR", "DE", "IN", "ES", "IT", "NL", "JP", "AU", "BR", "CA", "CH",
               "SE", "PL", "MX"]
    found, total, missed = {}, {}, {}
    for region in regions:
        for number in _valid_numbers(rng, region, 25):
            for layout, code in layouts.items():
                if layout == "national" and region not in ("US", "GB", "FR", "DE", "IN"):
                    continue
                written = phonenumbers.format_number(number, code)
                text = f"Office hours: {written} (front desk)."
                ok = find(text) == [("phone", 14, 14 + len(written))]
                found[layout] = found.get(layout, 0) + ok
                total[layout] = total.get(layout, 0) + 1
                if not ok:
                    missed.setdefault(layout, []).append(written)
    print({k: f"{found[k]}/{total[k]}" for k in total})
    for layout in total:
        assert found[layout] >= 0.99 * total[layout], (layout, missed.get(layout, [])[:5])


def test_placeholders_and_reports_hold_no_secret():
    lines = pii_corpus.corpus() + pii_corpus.heldout_lines()
    for text, gold in lines:
        scrubbed, found = scrub_pii(text)
        for kind, a, b in gold:
            assert text[a:b] not in scrubbed
        assert scrubbed.count("[") - text.count("[") == len(found)
        for m in found:
            assert set(vars(m)) == {"type", "start", "end"}     # the value is not kept
    text = "mail jane@example.org, call +44 20 7946 0958, key AKIAIOSFODNN7EXAMPLE"
    assert scrub_pii(text)[0] == "mail [EMAIL], call [PHONE], key [API_KEY]"


def test_config_chooses_types():
    text = "mail jane@example.org or call +44 20 7946 0958 from 10.0.0.1"
    assert scrub_pii(text, PiiConfig(types=("email",)))[0] == \
        "mail [EMAIL] or call +44 20 7946 0958 from 10.0.0.1"
    assert scrub_pii(text, PiiConfig(types=("phone", "ip")))[0] == \
        "mail jane@example.org or call [PHONE] from [IP]"
    with pytest.raises(ValueError, match="unknown PII types \\['postcode'\\]"):
        PiiConfig(types=("email", "postcode"))
