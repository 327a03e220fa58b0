"""RFC 4518 string preparation, step by step (test_ldap checks it agrees with slapd's matching)."""

from __future__ import annotations

import pytest

from libs.connectors.ldapprep import dn_key, prepare


@pytest.mark.parametrize(("raw", "prepared"), [
    ("ＡＤＭＩＮ", "admin"),                   # fullwidth letters: NFKC, then case folded
    ("  Ada \t  Lovelace\n", "ada lovelace"),  # insignificant spaces; tab and line feed are spaces
    ("ada\u00a0lovelace", "ada lovelace"),    # every space separator is a space
    ("ad\u00admin", "admin"),                 # soft hyphen: mapped to nothing
    ("ad\u200bmin\u200d", "admin"),           # zero-width space and joiner: nothing
    ("Straße", "strasse"),                    # case folding of B.2
    ("ﬁ", "fi"),                              # compatibility ligature
    ("Zoë", "zoë"),                           # a letter with a diacritic stays itself
])
def test_a_value_is_prepared_as_a_case_ignoring_match_prepares_it(raw, prepared):
    assert prepare(raw) == prepared


def test_case_exact_preparation_keeps_the_case():
    assert prepare("  ＡＤＡ  Lovelace ", case_fold=False) == "ADA Lovelace"


def test_a_dn_key_names_the_same_entry_in_one_spelling():
    assert dn_key(r"UID=Ａｄａ\20\20Lovelace, OU=People,DC=Example,DC=org") == \
        dn_key("uid=ada lovelace,ou=people,dc=example,dc=org") == "uid=ada lovelace,ou=people,dc=example,dc=org"
    assert dn_key(r"uid=a\,b+cn=Z,ou=p") == dn_key(r"cn=z+uid=a\2Cb,ou=p")  # escapes; RDN values in any order
    assert dn_key("uid=zoe,ou=p") != dn_key("uid=zoë,ou=p")
