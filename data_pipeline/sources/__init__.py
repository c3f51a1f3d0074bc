"""Dataset adapters: one per dataset, reading the OFFICIAL on-disk layout (docs/datasets.md), plus a generic folder + CSV.

`get_source(name)(root, **options).rows()` -> (validated rows, rejects). Names and aliases: `SOURCES`.
"""

from data_pipeline.sources.authentic import BID, CID2013, CLIVE, SPAQ, KonIQ10k
from data_pipeline.sources.base import MetadataError, Source
from data_pipeline.sources.generic import FolderCSV
from data_pipeline.sources.synthetic import CSIQ, KADID10k, KADIS700kRefs, LIVE, TID2013

SOURCES = {
    "koniq10k": KonIQ10k,
    "clive": CLIVE,
    "bid": BID,
    "spaq": SPAQ,
    "cid2013": CID2013,
    "kadid10k": KADID10k,
    "tid2013": TID2013,
    "live": LIVE,
    "csiq": CSIQ,
    "kadis700k": KADIS700kRefs,
    "csv": FolderCSV,
}
ALIASES = {"koniq": "koniq10k", "livechallenge": "clive", "livec": "clive", "live_challenge": "clive", "kadid": "kadid10k",
           "tid": "tid2013", "live2": "live", "liveiqa": "live", "kadis": "kadis700k", "folder": "csv", "generic": "csv"}


def get_source(name: str):
    """The adapter class for a dataset name or alias (case-insensitive, `-` and `_` ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    for table in (SOURCES, ALIASES):
        for k, v in table.items():
            if k.replace("_", "") == key:
                return SOURCES[v] if table is ALIASES else v
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(SOURCES)} (aliases: {sorted(ALIASES)})")


__all__ = ["SOURCES", "ALIASES", "get_source", "Source", "MetadataError", "KonIQ10k", "CLIVE", "BID", "SPAQ", "CID2013",
           "KADID10k", "TID2013", "LIVE", "CSIQ", "KADIS700kRefs", "FolderCSV"]
