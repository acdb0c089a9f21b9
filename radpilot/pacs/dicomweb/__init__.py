"""DICOMweb (PS3.18) over the archive: QIDO-RS, WADO-RS and STOW-RS.

One module per seam: :mod:`.qido` (query parameters to archive queries, DICOM JSON
answers), :mod:`.wado` (instances, metadata, bulk data), :mod:`.frames` (pixel data
frame by frame), :mod:`.stow` (storing the parts of a request), :mod:`.media` (media
types and Accept negotiation) and :mod:`.router` (the FastAPI routes, the only
module that knows HTTP statuses).
"""

from radpilot.pacs.dicomweb.router import make_dicomweb_router

__all__ = ["make_dicomweb_router"]
