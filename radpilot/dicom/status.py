"""DIMSE status codes (PS3.7 Annex C, PS3.4 Annex B.2.3 and C.4), the one definition RadPilot uses.

The archive answers every received instance with one of these, whichever service
received it: C-STORE returns it as the response's *Status*, STOW-RS as the
*FailureReason* (0008,1197) of a refused instance. The query/retrieve services and
the SCU use the rest.

The standard gives one code a different meaning in different services (0xA900 is
"Data Set does not match SOP Class" in a C-STORE response and "Identifier does not
match SOP Class" in a C-FIND response); each meaning RadPilot uses has its own name
here, so a caller says which one it means.
"""

from __future__ import annotations

SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = 0xFF00
PENDING_WITH_WARNINGS = 0xFF01  # C-FIND: optional keys not supported

# -- storage (C-STORE, STOW-RS) -----------------------------------------------------------

OUT_OF_RESOURCES = 0xA700  # storage failure (disk, database)
# "Data Set does not match SOP Class": RadPilot's answer to a re-sent SOP Instance UID
# whose content differs from the stored copy (the first copy is kept), and to a STOW-RS
# instance of another study than the one named in the request URL.
CONFLICT = 0xA900
CANNOT_UNDERSTAND = 0xC000  # not a usable DICOM instance

# -- query/retrieve (C-FIND, C-MOVE, C-GET) -----------------------------------------------

IDENTIFIER_MISMATCH = 0xA900  # the identifier does not match the SOP Class
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PROCESS = 0xC000

PENDING_STATUSES = frozenset({PENDING, PENDING_WITH_WARNINGS})
# Warnings: the request did what was asked, with a remark (optional attributes not
# supported, coercion of data elements or some sub-operations failed, elements
# discarded, data set does not match the SOP Class).
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
