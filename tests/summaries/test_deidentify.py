"""The patient's identifiers replaced before notes reach the LLM, and put back after."""

from datetime import date

from features.summaries.deidentify import Deidentifier


def deid(**overrides) -> Deidentifier:
    fields = {
        "given_name": "Grace",
        "family_name": "Hopper",
        "mrn": "MRN-004217",
        "birth_date": date(1950, 6, 15),
    }
    return Deidentifier(**{**fields, **overrides})


def test_names_mrn_birth_dates_phones_and_emails_are_replaced():
    text = (
        "GRACE HOPPER (MRN-004217), born 06/15/1950, also June 15, 1950. Ms. hopper calls from "
        "(555) 123-4567 or +1 555-987-6543; grace.h@example.org. Grace is well."
    )
    scrubbed = deid().scrub(text)
    for secret in ("Grace", "GRACE", "hopper", "004217", "1950", "555", "example.org"):
        assert secret not in scrubbed, secret
    assert "Ms. [PATIENT_FAMILY_NAME]" in scrubbed
    assert scrubbed.count("[PATIENT_PHONE_") == 2


def test_what_comes_back_is_restored_exactly():
    d = deid()
    scrubbed = d.scrub("Call (555) 123-4567. Grace Hopper, MRN-004217.")
    assert d.restore(scrubbed) == "Call (555) 123-4567. Grace Hopper, MRN-004217."
    assert d.restore("[PATIENT_GIVEN_NAME] is better; [PATIENT_UNKNOWN] stays.") == (
        "Grace is better; [PATIENT_UNKNOWN] stays."
    )


def test_other_words_and_numbers_are_left_alone():
    text = "Gracefully, BP 150/90, metformin 500 mg twice daily, seen 2026-02-01, Hoppers Lane."
    assert deid().scrub(text) == text


def test_turned_off_nothing_changes():
    text = "Grace Hopper, MRN-004217, (555) 123-4567."
    d = deid(enabled=False)
    assert d.scrub(text) == text and d.restore("[PATIENT_GIVEN_NAME]") == "[PATIENT_GIVEN_NAME]"


def test_strings_inside_entries_are_scrubbed_but_the_services_own_keys():
    d = deid()
    entry = {"id": "Grace", "text": "Grace Hopper", "facts": {"x": ["Hopper"]}}
    assert d.scrub_all(entry, keep=frozenset({"id"})) == {
        "id": "Grace",
        "text": "[PATIENT_GIVEN_NAME] [PATIENT_FAMILY_NAME]",
        "facts": {"x": ["[PATIENT_FAMILY_NAME]"]},
    }
