"""A run's identity: what decides its numbers (each schema field's `identity` flag), its fingerprint, and the digests of
its code and data."""

from __future__ import annotations

import hashlib
import json
import logging

from omegaconf import DictConfig, OmegaConf

from cnnrun.config import schema
from cnnrun.config.plugins import source_digest

log = logging.getLogger("cnnrun")


def identity(cfg: DictConfig, sources: dict | None = None, saved: bool = False) -> dict:
    """The part of `cfg` that decides a run's numbers (plain containers), as each schema field's `identity` flag
    says (config/schema.py: every key but those NOT_IDENTITY; a WHEN_SET key only when not its default). The
    trainer's schema is closed: its identity keys are read even where a recorded config lacks one. A group naming
    the user's own code (`_target_`) adds a digest of its source: `sources` (a run's record of them), else read now
    from the code. A `saved` config (read from a run directory) never has its code read: a directory names code, it
    does not get it run, so a digest it did not record is "unknown"."""
    out = {}
    for group in schema.IDENTITY_GROUPS:
        node, flags = cfg.get(group), schema.identity_flags(group)
        data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        if group == "augment":
            data = {k: v for k, v in data.items() if v is not None}
        if group == "trainer":
            data = {k: data.get(k) for k, (flag, _) in flags.items() if flag}
        data = {k: v for k, v in data.items() if flags.get(k, (True, None))[0] is True
                or (flags[k][0] == schema.WHEN_SET and v != flags[k][1])}
        if isinstance(data.get("_target_"), str):  # the user's own code: its source is part of what it does
            data["_source"] = (sources or {}).get(group) or \
                ("unknown" if saved else source_digest(data["_target_"], f"{group}._target_"))
        out[group] = data
    return out


def code_digests(cfg: DictConfig) -> dict:
    """{group: digest of its source} for the groups that name the user's own code: recorded in metrics.json."""
    return {group: part["_source"] for group, part in identity(cfg).items() if "_source" in part}


def fingerprint(cfg: DictConfig) -> str:
    """A short hash of the run's identity (identity())."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digest(cfg: DictConfig) -> str | None:
    """The digest of the data `cfg` reads (data.digest): part of a run's identity, beside the config's."""
    from cnnrun.data import digest

    try:
        return digest(cfg.dataset)
    except Exception:  # noqa: BLE001 - an unfinished config (no path yet): the data's own check says what is wrong
        return None


def same_data(earlier: dict, cfg: DictConfig) -> bool:
    """Whether an earlier run read the data `cfg` reads (runs recorded before digests existed: assumed so)."""
    before, now = earlier.get("data_digest"), data_digest(cfg)
    return before is None or now is None or before == now
