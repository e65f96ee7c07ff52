"""A compiled CHS-DRG scheme (分组方案): integer arrays the kernel reads, names for people.

The compiler (:mod:`grouper.drg.compile`) turns published tables into one ``Scheme``; it is
saved as a single ``.drgscheme`` file (an uncompressed NumPy ``.npz`` holding the arrays
and a JSON header with the scheme's name, version, source hash and compiler version) and
loads in milliseconds. The kernel and the explain path read only these arrays.

Array vocabulary (all int32 unless noted; ``*_ptr`` arrays are CSR offsets):

- codes: ``diag_codes`` / ``proc_codes`` (strings, id = position).
- lists: every code list of the scheme (MDC tables, body regions, ADRG lists, exclusion
  tables) has an id; ``diag_list_ptr/diag_list_ids`` give, per diagnosis id, the sorted
  ids of the lists it belongs to (likewise ``proc_*``).
- ``proc_is_or`` (int8): operating-room procedure (手术室手术).
- ``cc_level`` (int8, per diagnosis: 0, 1 CC, 2 MCC) and ``cc_table`` (its exclusion list id,
  -1 none); a CC/MCC is excluded when the principal diagnosis belongs to that list.
- MDCs in trial order: ``mdc_entry`` (0 principal table, 1 OR principal procedure),
  ``mdc_table``, ``mdc_sex``, ``mdc_min_regions``, ``mdc_region_ptr/mdc_regions``,
  ``mdc_cond_ptr``, ``mdc_adrg_ptr/mdc_adrgs`` (ADRG ids in trial order), ``mdc_surgical_end``
  (where its surgical ADRGs end in ``mdc_adrgs``), ``mdc_qy_drg`` (its ambiguous group 歧义组, -1 none).
- prefilter: ``diag_mdc_mask`` (uint64 per diagnosis: bit m when MDC m's table holds it),
  ``diag_adrg_mask_p/_s``, ``proc_adrg_mask_p/_s`` (uint64 [codes, words]: the ADRGs with a
  list that takes the code as principal / as another code), ``diag_s_any``/``proc_s_any``
  (the code is in any such list as another code) and ``adrg_always`` (ADRGs with a term no
  code list backs).
- ADRGs: ``adrg_alt_ptr`` → alternatives, ``alt_term_ptr`` → terms, ``term_opt_ptr`` →
  options ``opt_role``/``opt_list``; ``adrg_cond_ptr`` conditions; ``adrg_drg_ptr`` →
  DRG candidates in trial order ``cand_drg``, ``cand_sev_min``, ``cand_sev_max``, ``cand_cond_ptr``.
- conditions: ``cond_field`` (index into :attr:`Scheme.fields`: FIELDS, then fields derived
  from code lists, e.g. robot_assisted), ``cond_lo``/``cond_hi`` (float64, inclusive).
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drgdip.arrowio import InputError, publish

FORMAT_VERSION = 3

#: Record fields a condition may test (index = field id in ``cond_field``).
FIELDS = ("age", "age_days", "birth_weight_g", "los_days", "ventilation_hours")

# roles of a list in an ADRG rule (opt_role)
ROLE_PDX, ROLE_ODX, ROLE_ADX, ROLE_PPX, ROLE_APX, ROLE_ORPX, ROLE_NOPX, ROLE_ORPX_EXCEPT, ROLE_PDX_MDC = range(9)
ROLES = ("pdx", "odx", "adx", "ppx", "apx", "orpx", "nopx", "orpx_except", "pdx_mdc")
ROLE_WORDS = {
    "pdx": "主要诊断 principal diagnosis in",
    "odx": "其他诊断 a secondary diagnosis in",
    "adx": "主要或其他诊断 a diagnosis in",
    "ppx": "主要手术或操作 principal procedure in",
    "apx": "手术或操作 a procedure in",
    "orpx": "主要手术为手术室手术 principal procedure is an operating-room procedure",
    "nopx": "无手术室手术 no operating-room principal procedure",
    "orpx_except": "手术室手术且不在 operating-room principal procedure not in",
    "pdx_mdc": "符合主诊表 principal diagnosis in the MDC table",
}

ARRAY_NAMES = (
    "diag_list_ptr", "diag_list_ids", "proc_list_ptr", "proc_list_ids", "proc_is_or",
    "cc_level", "cc_table",
    "mdc_entry", "mdc_table", "mdc_sex", "mdc_min_regions", "mdc_region_ptr", "mdc_regions",
    "mdc_cond_ptr", "mdc_adrg_ptr", "mdc_adrgs", "mdc_surgical_end", "mdc_qy_drg",
    "diag_mdc_mask", "adrg_always", "diag_adrg_mask_p", "diag_adrg_mask_s", "diag_s_any",
    "proc_adrg_mask_p", "proc_adrg_mask_s", "proc_s_any",
    "adrg_alt_ptr", "alt_term_ptr", "term_opt_ptr", "opt_role", "opt_list", "adrg_cond_ptr",
    "adrg_drg_ptr", "cand_drg", "cand_sev_min", "cand_sev_max", "cand_cond_ptr",
    "cond_field", "cond_lo", "cond_hi",
)


@dataclass
class Scheme:
    meta: dict
    arrays: dict[str, np.ndarray]
    diag_codes: list[str]
    proc_codes: list[str]
    mdc_codes: list[str]          # in trial order
    adrg_codes: list[str]
    drg_codes: list[str]
    names: dict[str, str]         # code (MDC, ADRG, DRG, diagnosis, procedure) → name
    list_names: list[str]         # list id → where it comes from, for explanations
    validation: dict = field(default_factory=dict)
    _diag_index: dict | None = None
    _proc_index: dict | None = None

    # -- lookups
    @property
    def diag_index(self) -> dict[str, int]:
        if self._diag_index is None:
            self._diag_index = {c: i for i, c in enumerate(self.diag_codes)}
        return self._diag_index

    @property
    def proc_index(self) -> dict[str, int]:
        if self._proc_index is None:
            self._proc_index = {c: i for i, c in enumerate(self.proc_codes)}
        return self._proc_index

    def __getattr__(self, name):
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def fields(self) -> tuple[str, ...]:
        """Record fields a condition may test: FIELDS, then the rules' derived fields."""
        return tuple(self.meta.get("fields", FIELDS))

    @property
    def derived_fields(self) -> list:
        """[name, "proc" | "diag", list id] of each field derived from a code list."""
        return self.meta.get("derived_fields", [])

    @property
    def label(self) -> str:
        return f"{self.meta.get('name')} ({self.meta.get('source_hash', '')[:12]})"

    @property
    def scheme_id(self) -> str:
        """Stable identity: name plus the hash of the sources and rules it was compiled from."""
        return f"{self.meta.get('name')}@{self.meta.get('source_hash', '')[:16]}"

    # -- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as one uncompressed .npz (arrays + JSON header)."""
        path = Path(path)
        header = {
            "format_version": FORMAT_VERSION, "meta": self.meta, "diag_codes": self.diag_codes,
            "proc_codes": self.proc_codes, "mdc_codes": self.mdc_codes, "adrg_codes": self.adrg_codes,
            "drg_codes": self.drg_codes, "names": self.names, "list_names": self.list_names,
            "validation": self.validation,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(zipfile.ZipInfo("header.json", date_time=(2020, 1, 1, 0, 0, 0)),
                            json.dumps(header, ensure_ascii=False, sort_keys=True))
                for name in ARRAY_NAMES:
                    buf = io.BytesIO()
                    np.save(buf, np.ascontiguousarray(self.arrays[name]), allow_pickle=False)
                    zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(2020, 1, 1, 0, 0, 0)), buf.getvalue())
            # mkstemp makes the file 0600: an executor running as another user could not read it
            publish(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def to_bytes(self) -> bytes:
        """The ``.drgscheme`` file's bytes (what :meth:`save` writes; :meth:`load` reads them back)."""
        with tempfile.TemporaryDirectory() as d:
            target = Path(d) / "scheme.drgscheme"
            self.save(target)
            return target.read_bytes()

    @classmethod
    def load(cls, path: "str | os.PathLike | io.BytesIO") -> "Scheme":
        """A scheme from a ``.drgscheme`` file (or a file-like object holding one)."""
        try:
            with zipfile.ZipFile(path) as zf:
                header = json.loads(zf.read("header.json"))
                if header.get("format_version") != FORMAT_VERSION:
                    raise InputError(f"{path}: scheme file format {header.get('format_version')} "
                                     f"is not {FORMAT_VERSION}; recompile it with `drgdip scheme compile`")
                arrays = {n: np.load(io.BytesIO(zf.read(f"{n}.npy")), allow_pickle=False) for n in ARRAY_NAMES}
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a compiled drgdip scheme ({exc.__class__.__name__})") from None
        return cls(meta=header["meta"], arrays=arrays, diag_codes=header["diag_codes"],
                   proc_codes=header["proc_codes"], mdc_codes=header["mdc_codes"],
                   adrg_codes=header["adrg_codes"], drg_codes=header["drg_codes"], names=header["names"],
                   list_names=header["list_names"], validation=header.get("validation", {}))
