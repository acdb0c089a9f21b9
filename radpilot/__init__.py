"""RadPilot: an open AI reading-support system that sits beside a hospital PACS."""

__version__ = "0.1.0"
