"""The whole node on a real PostgreSQL index: `serve` with a postgresql:// URL stores, finds and serves DICOMweb."""

from __future__ import annotations

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.factories import make_ct_series

pytestmark = pytest.mark.integration


def test_node_with_postgresql_index_stores_and_answers_qido(radpilot_factory, fresh_postgres_url: str) -> None:
    node = radpilot_factory(database_url=fresh_postgres_url)
    assert node.archive.engine.dialect.name == "postgresql"
    series = make_ct_series(5, rows=32, columns=32, patient_id="PG-1")
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(node.host, node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds).Status for ds in series]
    assoc.send_c_store(series[0])  # idempotent re-send
    assoc.release()
    assert statuses == [0x0000] * 5
    assert node.archive.instance_count() == 5
    studies = httpx.get(f"{node.dicomweb_url}/studies", params={"PatientID": "PG-1"}, headers=node.headers, timeout=30).json()
    assert [s["00201208"]["Value"][0] for s in studies] == [5]
