"""The Principal every authenticated request carries: role parsing and role checks."""

import pytest

from radpilot.security.principal import Principal, Role, RoleRefused


def test_role_parse_accepts_any_case_and_names_known_roles_on_error() -> None:
    assert Role.parse(" Radiologist ") is Role.RADIOLOGIST
    with pytest.raises(ValueError, match="expected one of radiologist, technologist, administrator, researcher"):
        Role.parse("surgeon")


def test_require_refuses_other_roles_and_names_the_allowed_ones() -> None:
    radiologist = Principal("dr.kim", Role.RADIOLOGIST)
    radiologist.require(Role.RADIOLOGIST, Role.ADMINISTRATOR)
    with pytest.raises(RoleRefused, match="needs one of: administrator"):
        radiologist.require(Role.ADMINISTRATOR)


def test_only_researchers_are_denied_patient_identities() -> None:
    assert Principal("a", Role.ADMINISTRATOR).sees_identities
    assert not Principal("r", Role.RESEARCHER, kind="token").sees_identities
