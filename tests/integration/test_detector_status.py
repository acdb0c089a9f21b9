"""A PACS administrator sees how far study-complete routing has got on a running node."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from radpilot.archive.models import Study
from radpilot.security.principal import Role
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.auth import auth_headers
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_the_detector_status_moves_past_a_stored_study_once_its_quiet_period_has_run(radpilot_factory) -> None:
    node = radpilot_factory(analysis_enabled=True, workers=0, quiet_period_s=1.0)
    url = f"{node.base_url}/api/engine/detector"
    series = make_ct_series(3)
    for ds in series:
        node.archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="CT1")
    with node.archive.session() as session:
        changed = session.scalars(select(Study.updated_at).where(Study.study_instance_uid == series[0].StudyInstanceUID)).one()
    changed = changed if changed.tzinfo else changed.replace(tzinfo=UTC)  # SQLite keeps no time zone; RadPilot writes UTC

    def status() -> dict:
        return httpx.get(url, headers=node.headers, timeout=10).json()

    def past_the_study() -> dict | None:
        answer = status()
        return answer if answer["routed_up_to"] and datetime.fromisoformat(answer["routed_up_to"]) >= changed else None

    answer = wait_for(past_the_study, 30, "a detector pass past the stored study")
    assert answer["running"] is True and answer["quiet_period_s"] == 1.0
    assert answer["lag_s"] >= 1.0  # the watermark trails the clock by at least the quiet period
    assert datetime.fromisoformat(answer["last_pass_at"]) > datetime.fromisoformat(answer["routed_up_to"])
    assert httpx.get(url, headers=auth_headers(node.token_for(Role.RADIOLOGIST)), timeout=10).status_code == 403


def test_a_node_with_analysis_turned_off_reports_a_detector_that_is_not_running(radpilot) -> None:
    answer = httpx.get(f"{radpilot.base_url}/api/engine/detector", headers=radpilot.headers, timeout=10).json()
    assert answer["running"] is False and answer["routed_up_to"] is None and answer["lag_s"] is None
