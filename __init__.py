"""drgdip: CHS-DRG and DIP grouping and regional point-method settlement (区域点数法总额预算).

The library behind the ``drgdip`` command. Every name below is imported on first use, so
``import drgdip`` is fast and a notebook pays only for what it calls.

Grouping (CHS-DRG 分组, ``drgdip.grouper``)
    load_scheme(path=None)            a compiled scheme, a folder of published tables, or None (teaching scheme)
    compile_scheme(folder)            published tables -> a compiled scheme (and what could not be read)
    load_codes(folder)                the code sets (ZD_INFO.dat, SS_INFO.dat, maps) for validating codes
    group_table(records, scheme)      pyarrow Table / pandas DataFrame / path in, Arrow table out
    group_file(src, dst, scheme)      streaming, atomic, bounded memory
    explain(record, scheme)           one record's grouping path in words
    conformance(cases, scheme)        agreement with another grouper, by cause

DIP (按病种分值付费, ``drgdip.grouper.dip.api``)
    build_catalog(history, policy)    a local disease-score catalogue from history (drgdip.weights.dip_catalog)
    load_catalog(path), group_dip(records, catalog), recommend(record, catalog)

Weights and settlement (``drgdip.weights``)
    load_policy(path)                 a region's policy TOML
    compute_weights(history, policy)  relative weights (相对权重) with CV and RIV
    price_cases(cases, weights, policy)   case points (点数)
    settle_period(priced, policy, period), settle_year(monthly, policy, year)
    settle_month(period, records, ...), settle_annual(year, ...)   the ledgered runs behind ``drgdip settle``
    simulate(records, weights, policy, point_values)   a hospital's revenue against cost
    write_report(ledger, out_html)    the HTML report of a ledger
    compare_schemes(records, a, b, policy)   what-if between two schemes (分组方案切换测算)
    compute_benefits(records, persons)  the patient's side: basic, critical-illness, assistance (三重制度)

Supervision (智能监控, ``drgdip.weights.monitoring.rules``)
    monitor(records), monitor_file(src, out)   findings of the monitoring rules

Versions by discharge date (``drgdip.grouper.drg.versions``)
    VersionedGrouper.from_file(region_file).group(records)

Coding standards and quality control (``drgdip.codesets``)
    standards(), identify(code), validate_codes(array, standard)
    run_qc(records), check_file(src, out)

Synthetic data (``drgdip.synth``)
    synthesize_region(scheme=None, seed=0, years=(2024,)), run_demo(out_dir)
"""
from __future__ import annotations

import importlib

# public name -> module that defines it (imported lazily, PEP 562)
_API = {
    "load_scheme": "drgdip.grouper.drg.api",
    "load_codes": "drgdip.grouper.drg.api",
    "group_table": "drgdip.grouper.drg.api",
    "group_file": "drgdip.grouper.drg.api",
    "compile_scheme": "drgdip.grouper.drg.compile",
    "explain": "drgdip.grouper.drg.reference",
    "conformance": "drgdip.grouper.drg.conformance",
    "build_catalog": "drgdip.weights.dip_catalog",
    "load_catalog": "drgdip.grouper.dip.api",
    "group_dip": "drgdip.grouper.dip.api",
    "recommend": "drgdip.grouper.dip.api",
    "load_policy": "drgdip.weights.settlement.policy",
    "compute_weights": "drgdip.weights.relative_weights",
    "price_cases": "drgdip.weights.settlement.points",
    "settle_period": "drgdip.weights.settlement.settle",
    "settle_year": "drgdip.weights.settlement.settle",
    "settle_month": "drgdip.weights.settlement.runs",
    "settle_annual": "drgdip.weights.settlement.runs",
    "simulate": "drgdip.weights.settlement.simulate",
    "write_report": "drgdip.weights.report.settlement_report",
    "standards": "drgdip.codesets.standards",
    "identify": "drgdip.codesets.standards",
    "validate_codes": "drgdip.codesets.standards",
    "run_qc": "drgdip.codesets.qc",
    "check_file": "drgdip.codesets.qc",
    "synthesize_region": "drgdip.synth.region",
    "run_demo": "drgdip.synth.demo",
    "VersionedGrouper": "drgdip.grouper.drg.versions",
    "compare_schemes": "drgdip.weights.report.scheme_compare",
    "compute_benefits": "drgdip.weights.settlement.benefits",
    "monitor_file": "drgdip.weights.monitoring.rules",
    "monitor": "drgdip.weights.monitoring.rules",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'drgdip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
