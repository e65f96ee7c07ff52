"""drgdip command line: a thin layer of click commands over the library API.

Each command parses options, calls one library function, and formats the result.
Errors a person can fix (a bad file, a bad scheme, a bad policy) end the command with
one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import functools
import sys

import click

from drgdip.arrowio import InputError


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"drgdip: {self.format_message()}", err=True)


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, also when numba or a worker thread wrapped it in another exception."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def user_errors(fn):
    """The CLI's error contract.

    * Input a person can fix (:class:`InputError` and its kinds: a bad file, scheme, policy,
      ledger or table; a file the system cannot open): one line on stderr, exit code 2.
    * Ctrl-C: one line, exit code 130; outputs are left as they were (atomic writers).
    * Anything else is a bug in drgdip, not in the input: the traceback, then a line saying
      so, exit code 70 (EX_SOFTWARE)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except InputError as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(msg) from None
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise UserError(f"{where}{exc.strerror or exc}") from None
        except BaseException as exc:  # noqa: BLE001 - sorted into interrupt or bug below
            if _interrupted(exc):
                click.echo("drgdip: interrupted; outputs left as they were", err=True)
                sys.exit(130)
            if isinstance(exc, SystemExit):
                raise
            import traceback
            traceback.print_exc()
            click.echo(f"drgdip: internal error ({type(exc).__name__}): this is a bug in drgdip, not in your "
                       "input; please report it with the command line and the traceback above", err=True)
            sys.exit(70)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="drgdip")
def main():
    """Group discharges into CHS-DRG and DIP groups and settle them with the regional point method.

    \b
    Example:
      drgdip scheme compile ../shared/data/chs-drg/CHS_DRG_11 -o chs11.drgscheme
      drgdip group discharges.parquet -o grouped.parquet --scheme chs11.drgscheme
    """


def _progress(quiet: bool):
    """A progress bar on stderr for streamed records (after 1 s; none with --quiet)."""
    from tqdm import tqdm
    return tqdm(unit=" rec", disable=quiet, file=sys.stderr, mininterval=1.0, delay=1.0)


def _refuse_overwrite(inputs, output) -> None:
    from drgdip.arrowio import refuse_overwrite
    refuse_overwrite(inputs, output)


# --- grouping commands (grouper/) ---

def _scheme(path, rules=None):
    from drgdip.grouper.drg.api import load_scheme
    return load_scheme(path, rules)


@main.group("scheme")
def scheme_group():
    """Compile and inspect CHS-DRG schemes (分组方案).

    \b
    Example:
      drgdip scheme compile ../shared/data/chs-drg/CHS_DRG_11 -o chs11.drgscheme
      drgdip scheme info chs11.drgscheme
      drgdip scheme audit ../shared/data/chs-drg/CHS_DRG_11
    """


@scheme_group.command("compile")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Compiled scheme file to write.")
@click.option("--rules", type=click.Path(dir_okay=False), help="General rules TOML (default: the folder's rules.toml, else CHS-DRG 1.x).")
@click.option("--allow-gaps", is_flag=True, help="Write the scheme even if some lines could not be read (they are listed).")
@user_errors
def scheme_compile(folder, output, rules, allow_gaps):
    """Compile a folder of published scheme tables into one .drgscheme file.

    Every line the importer cannot read is listed with file and line; the command
    fails on any unless --allow-gaps is given.

    \b
    Example:
      drgdip scheme compile ../shared/data/chs-drg/CHS_DRG_11 -o chs11.drgscheme
    """
    from drgdip.grouper.drg.compile import SchemeError, compile_scheme
    try:
        scheme, problems = compile_scheme(folder, rules, allow_gaps=allow_gaps)
    except SchemeError as exc:
        for p in exc.problems[:50]:
            click.echo(f"  {p}", err=True)
        raise UserError(str(exc)) from None
    for p in problems[:50]:
        click.echo(f"  gap: {p}", err=True)
    scheme.save(output)
    c = scheme.meta["counts"]
    click.echo(f"{scheme.meta['name']}: {c['mdc']} MDC, {c['adrg']} ADRG, {c['drg']} DRG, {c['mcc']} MCC, "
               f"{c['cc']} CC, {c['exclusion_tables']} exclusion tables; {len(problems)} gap(s) -> {output}")


@scheme_group.command("audit")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--rules", type=click.Path(dir_okay=False), help="General rules TOML (default: the folder's rules.toml, else CHS-DRG 1.x).")
@click.option("--all", "every_row", is_flag=True, help="Every ADRG and DRG row, tab-separated, instead of the summary.")
@user_errors
def scheme_audit(folder, rules, every_row):
    """For every ADRG and DRG, which rule was read literally and which was inferred.

    Inferred: from a cross-reference (见 JD2 手术表), from the group's name (ages, weights,
    severity), from a general rule, or defaulted where the table states nothing; errata
    (grouper/drg/rules/errata.toml) are listed. Fails (exit 2) when a line cannot be read.

    \b
    Example:
      drgdip scheme audit ../shared/data/chs-drg/CHS_DRG_10P
      drgdip scheme audit ../shared/data/chs-drg/CHS_DRG_11 --all > audit11.tsv
    """
    from drgdip.grouper.drg.compile import SchemeError, audit_scheme, audit_text
    try:
        report = audit_scheme(folder, rules)
    except SchemeError as exc:
        raise UserError(str(exc)) from None
    click.echo(audit_text(report, every_row))
    if report["problems"]:
        raise UserError(f"{folder}: {len(report['problems'])} line(s) could not be read; first: {report['problems'][0]}")


@scheme_group.command("info")
@click.argument("scheme")
@user_errors
def scheme_info(scheme):
    """Show a scheme's name, version, source hash and counts.

    \b
    Example:
      drgdip scheme info chs11.drgscheme
    """
    import json
    click.echo(json.dumps(_scheme(scheme).meta, ensure_ascii=False, indent=2))


@main.command("group")
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output file (.parquet, .csv or .arrow), or a folder (a name ending in / or without an extension): "
                   "a dataset of Parquet part files part-00000.parquet..., written two at a time; never the input.")
@click.option("--scheme", default=None, help="Compiled scheme or folder of published tables (default: the built-in teaching scheme).")
@click.option("--region", "region_file", type=click.Path(dir_okay=False),
              help="Region file of scheme versions with effective dates: each record grouped by the version in force "
                   "at its discharge date (docs/versions.md).")
@click.option("--code-tables", "--codes", "codes_dir", type=click.Path(file_okay=False),
              help="Code-set folder (ZD_INFO.dat, SS_INFO.dat, maps) to validate and map codes.")
@click.option("--method", type=click.Choice(["drg", "dip"]), default="drg", show_default=True,
              help="drg: CHS-DRG groups with --scheme; dip: DIP disease-score groups with --catalog.")
@click.option("--catalog", type=click.Path(dir_okay=False), help="DIP catalogue (with --method dip).")
@click.option("--check", "check_out", type=click.Path(dir_okay=False),
              help="Also run settlement-list quality control; findings written to this file.")
@click.option("--keep", "keep", multiple=True, metavar="COLUMN|all",
              help="Input column(s) to write beside the key and the results (repeatable, or comma-separated); "
                   "'all' passes every input column through.")
@click.option("--encoding", default="auto", show_default=True,
              help="Encoding of a CSV input: auto (UTF-8 with or without BOM, else GB18030/GBK), utf-8, gb18030, gbk...")
@click.option("--batch-size", default=65536, show_default=True, type=click.IntRange(min=1),
              help="Records per batch (memory stays bounded).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def group_cmd(records, output, scheme, region_file, codes_dir, method, catalog, check_out, keep, encoding, batch_size,
              quiet):
    """Group discharge records: writes the record key (id, or row when the input has none), any --keep
    columns, and mdc, adrg, drg, status, reason; join back on the key.

    \b
    Example:
      drgdip group discharges.parquet -o grouped.parquet --scheme chs11.drgscheme
      drgdip group discharges.parquet -o full.parquet --scheme chs11.drgscheme --keep all
      drgdip group discharges.parquet -o grouped/ --scheme chs11.drgscheme
      drgdip group cases.csv -o grouped.csv --encoding gb18030 --keep hospital_id,los_days
      drgdip group discharges.parquet -o dip.parquet --method dip --catalog dip-catalog.parquet
      drgdip group discharges.parquet -o grouped.parquet --check findings.parquet --codes ../shared/data/codesets
      drgdip group history.parquet -o grouped.parquet --region region.schemes.toml
    """
    from tqdm import tqdm
    keep = [k.strip() for item in keep for k in item.split(",") if k.strip()]
    if method == "dip":
        from drgdip.grouper.dip.api import group_dip_file, load_catalog
        if not catalog:
            raise UserError("--method dip needs --catalog")
        cat = load_catalog(catalog)
        with tqdm(unit=" rec", disable=quiet, file=sys.stderr, mininterval=1.0, delay=1.0) as bar:
            n = group_dip_file(records, output, cat, batch_size, bar.update, keep=keep, encoding=encoding)
        click.echo(f"{n} records grouped with DIP catalogue {catalog} -> {output}")
        return

    from drgdip.grouper.drg.api import group_file, load_codes
    if region_file:
        from drgdip.grouper.drg.versions import VersionedGrouper, group_region_file
        if scheme or check_out:
            raise UserError("--region names the schemes itself: give it without --scheme or --check")
        vg = VersionedGrouper.from_file(region_file, load_codes(codes_dir))
        with tqdm(unit=" rec", disable=quiet, file=sys.stderr, mininterval=1.0, delay=1.0) as bar:
            counts = group_region_file(records, output, vg, batch_size, bar.update, keep=keep, encoding=encoding)
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        versions = ", ".join(v.version for v in vg.versions)
        click.echo(f"{sum(counts.values())} records grouped with {versions} by discharge date: {summary} -> {output}")
        return
    sch = _scheme(scheme)
    with tqdm(unit=" rec", disable=quiet, file=sys.stderr, mininterval=1.0, delay=1.0) as bar:
        tables = None
        if check_out and codes_dir:
            from drgdip.codesets.qc import load_code_tables
            tables = load_code_tables(codes_dir)
        counts = group_file(records, output, sch, load_codes(codes_dir), batch_size=batch_size, progress=bar.update,
                            check_dst=check_out, code_tables=tables, keep=keep, encoding=encoding)
    findings = counts.pop("findings", 0)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    click.echo(f"{sum(counts.values())} records grouped with {sch.meta.get('name')}: {summary} -> {output}")
    if check_out:
        click.echo(f"{findings} quality-control findings -> {check_out}")


@main.command("explain")
@click.option("--scheme", default=None, help="Compiled scheme or folder (default: teaching scheme).")
@click.option("--record", "record_json", required=True, help="One record as JSON.")
@click.option("--code-tables", "--codes", "codes_dir", type=click.Path(file_okay=False), help="Code-set folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def explain_cmd(scheme, record_json, codes_dir, as_json):
    """Explain one record's grouping path in words a hospital coder understands.

    \b
    Example:
      drgdip explain --scheme chs11.drgscheme --record '{"sex":"1","age":67,"diagnoses":["I21.000","E11.900"],"procedures":["36.0601"]}'
    """
    import json

    from drgdip.grouper.drg.api import load_codes
    from drgdip.grouper.drg.reference import explain
    try:
        json.loads(record_json)
    except json.JSONDecodeError as exc:
        raise UserError(f"--record is not valid JSON: {exc.msg}") from None
    e = explain(record_json, _scheme(scheme), load_codes(codes_dir))
    click.echo(json.dumps(e.as_dict(), ensure_ascii=False, indent=2) if as_json else e.text())


@main.command("bench")
@click.option("--records", default=200_000, show_default=True, type=click.IntRange(min=1),
              help="Synthetic records for the kernel and the encoder.")
@click.option("--scheme", default=None, help="Scheme folder or .drgscheme (default: the teaching scheme).")
@click.option("--sample", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Records for the plain-Python paths.")
@click.option("--e2e-records", type=click.IntRange(min=1), help="Records for end to end (default: --records).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic records.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(min=1), help="Timed repeats (best kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@user_errors
def bench_cmd(records, scheme, sample, e2e_records, seed, repeat, as_json):
    """Measure throughput in one run, with the core count: plain Python vs compiled kernel vs
    end to end per output mode, against the I/O floor (same as python -m drgdip.bench.throughput).

    \b
    Example:
      drgdip bench --records 2000000 --scheme ../shared/data/chs-drg/CHS_DRG_11
      drgdip bench --records 100000 --json
    """
    from drgdip.bench.throughput import main as bench_main
    argv = ["--records", str(records), "--sample", str(sample), "--seed", str(seed), "--repeat", str(repeat)]
    if scheme and scheme != "teaching":
        argv += ["--scheme", scheme]
    if e2e_records:
        argv += ["--e2e-records", str(e2e_records)]
    if as_json:
        argv.append("--json")
    bench_main(argv)


@main.command("conformance")
@click.argument("cases", type=click.Path(dir_okay=False))
@click.option("--scheme", required=True, help="Compiled scheme or folder of published tables.")
@click.option("--code-tables", "--codes", "codes_dir", type=click.Path(file_okay=False), help="Code-set folder.")
@user_errors
def conformance_cmd(cases, scheme, codes_dir):
    """Compare with another grouper's answers: agreement on drg, adrg, mdc, status; disagreements by cause.

    \b
    Example:
      drgdip conformance ../shared/data/conformance/chs-drg-1.1-cases.csv --scheme chs11.drgscheme
    """
    from drgdip.grouper.drg.api import load_codes
    from drgdip.grouper.drg.conformance import conformance
    click.echo(conformance(cases, _scheme(scheme), load_codes(codes_dir)).text())



# --- codes and quality-control commands (codesets/) ---

def _code_tables_option(fn):
    fn = click.option("--code-tables", "--codes", "code_tables_dir", type=click.Path(),
                      help="Folder with ZD_INFO.dat (diagnoses) and SS_INFO.dat (procedures).")(fn)
    fn = click.option("--diagnosis-table", type=click.Path(), help="`code name` diagnosis table.")(fn)
    fn = click.option("--procedure-table", type=click.Path(), help="`code name` procedure table.")(fn)
    return fn


def _width(text: str) -> int:
    """Columns TEXT takes in a terminal (Chinese characters take two)."""
    from wcwidth import wcswidth
    w = wcswidth(text)
    return w if w >= 0 else len(text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _echo_table(table) -> None:
    if table.num_rows == 0:
        click.echo("  (none)")
        return
    cols = table.column_names
    rows = [[("" if v is None else str(v)) for v in r.values()] for r in table.to_pylist()]
    width = [max(_width(c), *(_width(r[i]) for r in rows)) for i, c in enumerate(cols)]
    click.echo("  " + "  ".join(_pad(c, w) for c, w in zip(cols, width)).rstrip())
    for r in rows:
        click.echo("  " + "  ".join(_pad(v, w) for v, w in zip(r, width)).rstrip())


@main.group("codes")
def codes_group():
    """The 15 medical-insurance coding standards: explain, validate, map codes.

    \b
    Example:
      drgdip codes info H11010500001
      drgdip codes validate discharges.parquet --code-tables ../shared/data/codesets
      drgdip codes map old.csv --mapping ZD_MAP.dat -o mapped.csv
    """


@codes_group.command("info")
@click.argument("code", required=False)
@click.option("--standard", help="Check against this standard (id from `drgdip codes info`).")
@user_errors
def codes_info(code, standard):
    """Which standard a code follows, its segments and what they mean.

    Without CODE: list the standards.

    \b
    Example:
      drgdip codes info H11010500001
      drgdip codes info I21.000x005
      drgdip codes info H11010500001 --standard fixed_hospital
    """
    from drgdip.codesets.reasons import describe
    from drgdip.codesets.standards import identify, parse_code, standards
    if not code:
        rows = list(standards().values())
        zw = max(_width(s.zh) for s in rows)
        for s in rows:
            click.echo(f"{s.number:>2}  {s.id:<20} {_pad(s.zh, zw)}  {s.en}  "
                       f"[{', '.join(l.status for l in s.layouts)}]")
        return
    found = [parse_code(code, standard)] if standard else identify(code)
    if not found or not found[0].valid:
        p = found[0] if found else None
        why = describe(p.problem) if p and p.problem else "fits no standard's layout"
        raise UserError(f"{code}: invalid{' ' + p.standard.id if p else ''}: {why}")
    for p in found:
        click.echo(f"{p.code}: {p.standard.zh} / {p.standard.en} (standard {p.standard.number}, "
                   f"layout {p.layout.name}, {p.layout.status})")
        for name, value in p.segments.items():
            click.echo(f"  {name:<14} {value:<12} {p.layout.segments.get(name, '')}")


@codes_group.command("validate")
@click.argument("records", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="Write one row per invalid code (Parquet/CSV).")
@_code_tables_option
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="Language of the messages: en English, zh 中文.")
@user_errors
def codes_validate(records, output, code_tables_dir, diagnosis_table, procedure_table, lang):
    """Check every coded column against its standard (and the code tables, if given).

    \b
    Example:
      drgdip codes validate discharges.parquet --code-tables ../shared/data/codesets -o bad_codes.csv
    """
    from drgdip.codesets.qc import CODE_KINDS, check_file, load_code_tables, load_rules
    tables = load_code_tables(code_tables_dir, diagnosis_table, procedure_table)
    rules = [r for r in load_rules() if r.kind in CODE_KINDS]
    s = check_file(records, output, rules=rules, code_tables=tables, lang=lang)
    click.echo(f"{s.records} records, {s.findings} invalid codes")
    _echo_table(s.by_rule)
    if s.skipped:
        click.echo(f"not checked (column or code table absent): {', '.join(s.skipped)}")


@codes_group.command("map")
@click.argument("records", type=click.Path())
@click.option("--mapping", required=True, type=click.Path(), help="`source target` mapping table.")
@click.option("--from", "source", help="Source edition label, recorded in the output metadata.")
@click.option("--to", "target", help="Target edition label, recorded in the output metadata.")
@click.option("--column", "columns", multiple=True, help="Column(s) to map (default: diagnoses).")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Records with <column>_mapped and <column>_unmapped added (never the input).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def codes_map(records, mapping, source, target, columns, output, quiet):
    """Map codes to another edition; codes without a mapping are kept and listed.

    \b
    Example:
      drgdip codes map old.csv --mapping ../shared/data/codesets/ZD_MAP.dat \\
        --from icd10-clinical-2.0 --to icd10-insurance-2.0 -o mapped.csv
    """
    from drgdip.codesets.code_tables import map_file
    _refuse_overwrite([records, mapping], output)
    with _progress(quiet) as bar:
        s = map_file(records, output, mapping, list(columns) or None,
                     source_edition=source, target_edition=target, progress=bar.update)
    click.echo(f"{s.codes} codes, {s.mapped} mapped, {s.codes - s.mapped} without a mapping "
               f"({len(s.unmapped)} distinct)")
    for code, n in list(s.unmapped.items())[:20]:
        click.echo(f"  unmapped {code} x{n}")


@main.command("check")
@click.argument("records", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="Findings file: id, rule, severity, field, value, message.")
@_code_tables_option
@click.option("--rules", "rules_path", type=click.Path(), help="Rules CSV (default: the built-in qc_rules.csv).")
@click.option("--scheme", type=click.Path(),
              help="Scheme: its validation limits, and grouping results for the rules only it decides "
                   "(SEX_CONFLICT, NO_MDC, NO_ADRG, NO_DRG, QC_SEX_MDC). Default: the limits of grouper/drg/rules/chs-drg-1.x.toml, "
                   "those rules not run.")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Region policy (TOML): its fund labels for UNKNOWN_FUND (not run without).")
@click.option("--summary", "summary_path", type=click.Path(), help="Write findings by hospital and rule (CSV/Parquet).")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="Language of the messages: en English, zh 中文.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def check_cmd(records, output, code_tables_dir, diagnosis_table, procedure_table, rules_path, scheme, policy_path,
              summary_path, lang, quiet):
    """Settlement-list quality control (结算清单质控) before grouping: every reason the grouper
    and pricing would reject a record for, plus the settlement-list rules and duplicate ids.

    \b
    Example:
      drgdip check discharges.parquet -o issues.parquet --code-tables ../shared/data/codesets \\
        --scheme chs11.drgscheme --policy region.toml
      drgdip check discharges.csv --lang zh --summary by_hospital.csv
    """
    from drgdip.arrowio import write_table
    from drgdip.codesets.qc import check_file, load_code_tables, load_rules
    _refuse_overwrite(records, output)
    _refuse_overwrite([records, output], summary_path)
    rules = load_rules(rules_path)
    tables = load_code_tables(code_tables_dir, diagnosis_table, procedure_table)
    grouping = loaded = None
    if scheme:
        from drgdip.grouper.drg.api import group_table, load_scheme
        loaded = load_scheme(scheme)
        grouping = lambda t: group_table(t, loaded)  # noqa: E731
    labels = None
    if policy_path:
        from drgdip.weights.settlement.policy import load_policy
        labels = load_policy(policy_path).fund_of_label()
    with _progress(quiet) as bar:
        s = check_file(records, output, rules=rules, code_tables=tables, lang=lang, scheme=loaded, grouping=grouping,
                       fund_labels=labels, progress=bar.update)
    click.echo(f"{s.records} records, {s.findings} findings")
    _echo_table(s.by_rule)
    if s.skipped:
        click.echo(f"rules not run (column, code table, --scheme or --policy absent): {', '.join(s.skipped)}")
    if summary_path:
        write_table(s.by_hospital, summary_path)


# --- weights and settlement commands (weights/) ---

class DefaultGroup(click.Group):
    """A group with a default command: ``drgdip weights HISTORY …`` runs ``weights compute``
    when the first argument is not one of the group's command names (nor --help)."""

    def __init__(self, *args, default_command: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@main.group("weights", cls=DefaultGroup, default_command="compute")
def weights_group():
    """Weight tables: compute relative weights from history (the default), or import a published table.

    \b
    Example:
      drgdip weights history.parquet --scheme chs11.drgscheme --policy region.toml -o weights.parquet
      drgdip weights compute history.parquet --policy region.toml -o weights.parquet
      drgdip weights import ../shared/data/weights/regions/苏州2023.csv -o suzhou-2023.parquet
      drgdip weights import table.csv --region-columns map.toml --encoding gb18030 -o weights.parquet
    """


@weights_group.command("compute")
@click.argument("history", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Region policy (TOML).")
@click.option("-o", "--output", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Weights file (.parquet or .csv).")
@click.option("--scheme", type=click.Path(), help="Scheme to group records that have no drg column.")
@click.option("--group-column", default="drg", show_default=True, help="Column holding the group code.")
@click.option("--batch-size", default=65536, show_default=True, type=click.IntRange(min=1),
              help="Records per batch (memory stays bounded; the weights do not depend on it).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def weights_cmd(history, policy_path, out, scheme, group_column, batch_size, quiet):
    """Relative weights (RW) per group from history, with CV per group and RIV.

    \b
    Example:
      drgdip weights compute history.parquet --scheme chs11.drgscheme --policy region.toml -o weights.parquet
      drgdip weights history.parquet --scheme chs11.drgscheme --policy region.toml -o weights.parquet

    The default command of ``drgdip weights``: the word ``compute`` may be left out.
    """
    from drgdip.weights.settlement.runs import make_weights
    _refuse_overwrite([history, policy_path], out)
    r = make_weights(history, policy_path, out, scheme=scheme, group_column=group_column, quiet=quiet,
                     batch_size=batch_size)
    t = r.table
    import pyarrow.compute as pc
    unpriced = pc.sum(pc.is_null(t["weight"])).as_py()
    high_cv = pc.sum(pc.fill_null(pc.greater_equal(t["cv"], 1.0), False)).as_py()
    click.echo(f"{t.num_rows} groups ({unpriced} without weight), RIV {r.riv:.4f}, {high_cv} group(s) with CV >= 1; "
               f"years {r.years}; excluded {r.excluded or 'none'} -> {out}")


@weights_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Weight table to write (.parquet or .csv).")
@click.option("--region-columns", "region_columns", type=click.Path(dir_okay=False),
              help="Column map TOML laid over the built-in header aliases (a policy file with [weight_table] works).")
@click.option("--encoding", default="auto", show_default=True,
              help="Encoding of FILE: auto (UTF-8 with or without BOM, else GB18030), utf-8, gbk, gb18030.")
@user_errors
def weights_import_cmd(file, out, region_columns, encoding):
    """Read a city's published DRG weight table (官方权重表) into the project's weight format.

    Every published column is kept (as src_<header>); flags (基础病组, 单议病组, 中医优势病组,
    不稳定病组) become bool columns, thresholds multiples. Prints groups read, rows dropped by
    reason and flags found. See docs/official_tables.md.

    \b
    Example:
      drgdip weights import ../shared/data/weights/regions/苏州2023.csv -o suzhou-2023.parquet
      drgdip weights import table.csv --region-columns map.toml -o weights.parquet
    """
    from drgdip.weights.official_tables import import_file, summary_text
    _refuse_overwrite([file, *( [region_columns] if region_columns else [])], out)
    report = import_file(file, out, region_columns, None if encoding == "auto" else encoding)
    click.echo(summary_text(report))
    click.echo(f"-> {out}")


@main.command("settle")
@click.argument("period")
@click.argument("records", required=False, type=click.Path(dir_okay=False))
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Region policy (TOML).")
@click.option("--ledger", "ledger_path", required=True, type=click.Path(dir_okay=False), help="Ledger database (SQLite).")
@click.option("--new-ledger", is_flag=True,
              help="Start a new ledger at --ledger, creating its folders (refused if it exists).")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
              help="Weight table: computed (.parquet) or official (CSV drg,weight).")
@click.option("--scheme", type=click.Path(), help="Scheme to group records that have no drg column.")
@click.option("-o", "--output", "--out", "out", type=click.Path(file_okay=False), help="Output folder (replaced atomically).")
@click.option("--final", is_flag=True, help="Annual settlement (清算) of the year PERIOD from the ledger.")
@click.option("--partial-year", is_flag=True,
              help="With --final: settle the year although some months are not settled.")
@click.option("--reopen", is_flag=True, help="Settle an already settled period again, as a new revision.")
@click.option("--group-column", default="drg", show_default=True, help="Column holding the group code.")
@click.option("--batch-size", default=65536, show_default=True, type=click.IntRange(min=1),
              help="Records per batch (memory stays bounded; the outputs do not depend on it).")
@click.option("--benefits", type=click.Path(dir_okay=False),
              help="drgdip benefits' output for these stays: each record's personal share taken from it by id.")
@click.option("--scores", type=click.Path(dir_okay=False),
              help="With --final: year-end assessment scores (CSV hospital_id,score) for the quality refund "
                   "(质量保证金返还, policy [quality]).")
@click.option("--method", type=click.Choice(["drg", "dip", "mixed"]), default="drg", show_default=True,
              help="drg: DRG weights; dip: DIP scores of --catalog (point value per [dip_settlement]); "
                   "mixed: [dip_settlement] hospitals by DIP, the others by DRG, one point pool.")
@click.option("--catalog", type=click.Path(dir_okay=False),
              help="DIP catalogue (drgdip dip catalog) for --method dip or mixed.")
@click.option("--decisions", type=click.Path(dir_okay=False),
              help="Special-review decisions (特例单议) of the office: CSV id,decision,points (with --reopen for a "
                   "settled month); the outcome per row goes to decisions.csv.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def settle_cmd(period, records, policy_path, ledger_path, new_ledger, weights_path, scheme, out, final, partial_year,
               reopen, group_column, batch_size, benefits, scores, method, catalog, decisions, quiet):
    """Settle a month's discharges (点数法 pre-settlement), or a year with --final.

    \b
    Example:
      drgdip settle 2026-10 discharges-2026-10.parquet --scheme chs11.drgscheme \\
          --weights weights.parquet --policy region.toml --ledger region.db --out settled/2026-10
      drgdip settle 2026 --final --policy region.toml --ledger region.db --scores scores-2026.csv
      drgdip settle 2026-10 discharges-2026-10.parquet --method dip --catalog dip-catalog.parquet \\
          --policy region.toml --ledger dip.db --out dip/2026-10
      drgdip settle 2026 --final --method dip --policy region.toml --ledger dip.db --out dip/2026
      drgdip settle 2026-10 discharges-2026-10.parquet --weights weights.parquet --policy region.toml \\
          --ledger region.db --out settled/2026-10 --decisions decisions-2026-10.csv --reopen
    """
    from drgdip.weights.settlement.ledger import LedgerError
    from drgdip.weights.settlement.runs import settle_annual, settle_month, summary_text
    try:
        if final:
            if new_ledger:
                raise click.UsageError("--new-ledger: an annual settlement reads an existing ledger")
            if catalog is not None:
                raise click.UsageError("--catalog goes with a monthly settlement (--final reads the ledger)")
            if decisions is not None:
                raise click.UsageError("--decisions goes with a monthly settlement (settle the month again)")
            result = settle_annual(period, policy_path=policy_path, ledger_path=ledger_path, out=out,
                                   reopen=reopen, quiet=quiet, partial_year=partial_year, scores=scores,
                                   method=method)
        else:
            if method != "drg" and catalog is None:
                raise click.UsageError(f"--method {method} needs --catalog (the DIP catalogue)")
            if method == "dip" and weights_path is not None:
                raise click.UsageError("--method dip prices by the catalogue's scores: no --weights")
            if records is None or (weights_path is None and method != "dip"):
                raise click.UsageError("a monthly settlement needs RECORDS and --weights (or use --final for a year)")
            if partial_year:
                raise click.UsageError("--partial-year goes with --final")
            if scores:
                raise click.UsageError("--scores goes with --final (the quality refund is annual)")
            result = settle_month(period, records, policy_path=policy_path, weights_path=weights_path,
                                  ledger_path=ledger_path, out=out, scheme=scheme, reopen=reopen,
                                  group_column=group_column, quiet=quiet, new_ledger=new_ledger,
                                  batch_size=batch_size, benefits=benefits, method=method, catalog=catalog,
                                  decisions=decisions)
    except LedgerError as exc:
        raise UserError(str(exc)) from None
    click.echo(summary_text(result))


@main.command("benefits")
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Benefit policy TOML laid over the defaults (weights/settlement/benefits_policy.toml).")
@click.option("--persons", "persons_path", type=click.Path(dir_okay=False),
              help="Person file: patient_id, assistance_class and enrolment facts (see docs/benefits.md).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Per-stay amounts (.parquet, .csv or .arrow); personal_share is the patient's remainder.")
@click.option("--totals", type=click.Path(dir_okay=False), help="Also write the per person-year totals here.")
@user_errors
def benefits_cmd(records, policy_path, persons_path, output, totals):
    """Split each stay between basic insurance, critical-illness insurance (employees: the large-claim top-up), medical assistance and the patient (三重制度).

    \b
    Example:
      drgdip benefits stays.parquet --policy region-benefits.toml --persons persons.csv \\
          -o benefits.parquet --totals person-years.csv
    """
    from drgdip.weights.settlement.benefits import summary_text as benefits_summary
    from drgdip.weights.settlement.benefits import write_benefits
    _refuse_overwrite([records, persons_path, policy_path], output)
    _refuse_overwrite([records, persons_path, policy_path, output], totals)
    result = write_benefits(records, persons_path, policy_path, output, totals)
    click.echo(benefits_summary(result))


@main.group("ledger")
def ledger_group():
    """The settlement ledger: what was settled, when, with what.

    \b
    Example:
      drgdip ledger show region.db
    """


@ledger_group.command("show")
@click.argument("ledger_path", type=click.Path(dir_okay=False))
@user_errors
def ledger_show_cmd(ledger_path):
    """List every settlement run with its inputs' hashes and point values.

    A run's state is current, superseded (a later revision exists) or stale (an annual
    settlement with a month of its year settled or reopened after it).

    \b
    Example:
      drgdip ledger show region.db
    """
    from drgdip.weights.settlement.ledger import show
    click.echo(show(ledger_path))


@main.command("compare")
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("--scheme", "schemes", multiple=True, required=True,
              help="Scheme A, then scheme B (compiled file, folder of tables, or 'teaching').")
@click.option("--weights", "weights", multiple=True, type=click.Path(dir_okay=False),
              help="Weight table of A, then of B (default: computed from RECORDS under each scheme).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Region policy (TOML): price both sides and pay them at a constant pool.")
@click.option("--code-tables", "--codes", "codes_dir", type=click.Path(file_okay=False), help="Code-set folder.")
@click.option("-o", "--output", "--out", "out", type=click.Path(file_okay=False),
              help="Folder for transitions.csv, hospitals.csv, departments.csv, groups.csv, cases.parquet, "
                   "summary.json and the page compare.html.")
@user_errors
def compare_cmd(records, schemes, weights, policy_path, codes_dir, out):
    """What-if between two schemes (分组方案切换测算): group transitions, points and payment change.

    \b
    Example:
      drgdip compare discharges.parquet --scheme chs11.drgscheme --scheme bj11.drgscheme --policy region.toml -o what-if/
    """
    import json
    from pathlib import Path

    from drgdip.arrowio import write_table
    from drgdip.grouper.drg.api import load_codes
    from drgdip.weights.report.scheme_compare import compare_schemes
    from drgdip.weights.settlement.policy import load_policy
    if len(schemes) != 2:
        raise UserError("give exactly two --scheme options: A (the current scheme), then B")
    _refuse_overwrite([records, *weights, policy_path], out)
    if len(weights) not in (0, 2):
        raise UserError("give --weights twice (A's table, then B's) or not at all")
    a, b = (None if s == "teaching" else s for s in schemes)
    r = compare_schemes(records, a, b, load_policy(policy_path) if policy_path else None,
                        weights_a=weights[0] if weights else None, weights_b=weights[1] if weights else None,
                        codes=load_codes(codes_dir), labels=(Path(schemes[0]).name, Path(schemes[1]).name))
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_table(r.transitions, folder / "transitions.csv")
        write_table(r.cases, folder / "cases.parquet")
        for name, t in (("hospitals", r.by_hospital), ("departments", r.by_department), ("groups", r.by_group)):
            if t is not None:
                write_table(t, folder / f"{name}.csv")
        from drgdip.weights.report.settlement_report import compare_page
        for name, text_ in (("summary.json", json.dumps(r.summary, ensure_ascii=False, indent=2, sort_keys=True) + "\n"),
                            ("compare.html", compare_page(r))):
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text_, encoding="utf-8")
            tmp.replace(folder / name)
    click.echo(r.text() + (f"\n-> {out}" if out else ""))


@main.command("simulate")
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("--weights", "weights_path", required=True, type=click.Path(dir_okay=False), help="Weight table.")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Region policy (TOML).")
@click.option("--hospital", help="Only this hospital's records (hospital_id).")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False), help="Take the last period's point values from this ledger.")
@click.option("--point-value", "point_values", multiple=True, metavar="FUND=VALUE",
              help="Point value per fund, e.g. employee=43.41 (overrides the ledger).")
@click.option("--scheme", type=click.Path(), help="Scheme to group records that have no drg column.")
@click.option("--group-column", default="drg", show_default=True, help="Column holding the group code.")
@click.option("-o", "--output", "--out", "out", type=click.Path(dir_okay=False), help="Write the priced cases here (.parquet/.csv).")
@click.option("--limit", default=20, show_default=True, help="Rows shown per table.")
@user_errors
def simulate_cmd(records, weights_path, policy_path, hospital, ledger_path, point_values, scheme, group_column, out, limit):
    """A hospital's revenue vs cost by DRG, department and doctor, with CMI and efficiency indices.

    \b
    Example:
      drgdip simulate our-discharges.parquet --hospital H23010000001 --weights weights.parquet \\
          --policy region.toml --ledger region.db
    """
    from contextlib import closing
    _refuse_overwrite([records, weights_path, policy_path, ledger_path], out)
    from drgdip.arrowio import read_table, write_table
    from drgdip.weights.relative_weights import read_weight_table
    from drgdip.weights.settlement import ledger as ledger_mod
    from drgdip.weights.settlement.policy import load_policy
    from drgdip.weights.settlement.runs import group_if_needed
    from drgdip.weights.settlement.simulate import (
        last_point_values,
        report_text,
        simulate,
    )
    values, source = {}, "--point-value"
    if ledger_path:
        with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
            period, values = last_point_values(conn)
        source = f"ledger {period}"
    for item in point_values:
        fund, _, v = item.partition("=")
        try:
            values[fund.strip()] = float(v)
        except ValueError:
            raise UserError(f"--point-value {item!r}: use FUND=VALUE, e.g. employee=43.41") from None
    if not values:
        raise UserError("no point value: pass --ledger or --point-value FUND=VALUE")
    table = group_if_needed(read_table(records), scheme, group_column)
    result = simulate(table, read_weight_table(weights_path, group_column), load_policy(policy_path), values,
                      hospital_id=hospital, group_column=group_column)
    click.echo(f"point values ({source}): " + ", ".join(f"{k} {v:.6f}" for k, v in sorted(values.items())))
    click.echo(report_text(result, limit))
    if out:
        write_table(result["cases"], out)


# --- DIP commands ---

@main.command("monitor")
@click.argument("records", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Findings file (.parquet, .csv or .arrow).")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False), help="Rules CSV replacing the built-in library.")
@click.option("--add-rules", "extra_rules", type=click.Path(dir_okay=False),
              help="A region's own rules CSV: added to the library, replacing rules of the same id.")
@click.option("--scheme", default=None, help="Scheme to group records that have no drg/adrg columns (default: teaching scheme).")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
              help="Group norms (drg, weight, mean_cost, mean_los); default: computed from the records.")
@click.option("--history", "history_path", type=click.Path(dir_okay=False),
              help="Earlier records: hospitals' CC/MCC shares are also compared with their own past.")
@click.option("--outpatient", "outpatient_path", type=click.Path(dir_okay=False),
              help="Outpatient visits (patient_id, hospital_id, visit_date, total_cost) for the cost-shifting rule.")
@click.option("--partitions", type=click.IntRange(min=1), help="Split the work by patient into this many temporary files "
              "(bounded memory; default: one per 2,000,000 rows of a Parquet file).")
@click.option("--batch-size", default=65536, show_default=True, type=click.IntRange(min=1), help="Records read per batch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def monitor_cmd(records, output, rules_path, extra_rules, scheme, weights_path, history_path, outpatient_path,
                partitions, batch_size, quiet):
    """Smart monitoring (智能监控): split admissions, overlapping stays, upcoding, low-standard admissions.

    One row per finding: id, rule, severity, hospital_id, doctor_id, patient_id,
    record_ids, figures (JSON), message_zh, message_en, status, reason.

    \b
    Example:
      drgdip monitor discharges.parquet -o findings.csv
      drgdip monitor grouped.parquet -o findings.parquet --add-rules region-rules.csv --partitions 16
      drgdip monitor discharges-2024.parquet --history discharges-2023.parquet -o findings.csv
    """
    from tqdm import tqdm

    from drgdip.weights.monitoring.rules import load_rules, monitor_file
    weights = None
    if weights_path:
        from drgdip.weights.relative_weights import read_weight_table
        weights = read_weight_table(weights_path)
    rules = load_rules(rules_path, extra_rules)
    with tqdm(unit=" rec", disable=quiet, file=sys.stderr, mininterval=1.0, delay=1.0) as bar:
        r = monitor_file(records, output, rules=rules, scheme=scheme, weights=weights, batch_size=batch_size,
                         partitions=partitions, progress=bar.update, history=history_path,
                         outpatient=outpatient_path)
    summary = ", ".join(f"{k} {v}" for k, v in r.counts.items()) or "none"
    click.echo(f"{r.records} records, {r.findings.num_rows} findings ({summary}); norms from {r.norms_source} -> {output}")
    if r.skipped:
        click.echo(f"not run (no --history or --outpatient input): {', '.join(r.skipped)}")


@main.group("dip")
def dip_group():
    """DIP (按病种分值付费): build a local catalogue, compare it, check a record's candidate groups.

    \b
    Example:
      drgdip dip catalog history.parquet --policy region.toml -o dip-catalog.parquet
      drgdip dip recommend --catalog dip-catalog.parquet --record '{"diagnoses": "K80.100", "procedures": "51.2300"}'
    """


@dip_group.command("catalog")
@click.argument("history", required=False, type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Path(dir_okay=False), help="Policy TOML; its [dip] table overrides the defaults.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Catalogue file (.parquet or .csv), or the comparison with --compare.")
@click.option("--procedure-types", type=click.Path(dir_okay=False), help="CSV prefix,type table of procedure types (official one, if any).")
@click.option("--scheme", type=click.Path(), help="CHS-DRG scheme to derive procedure types from (surgical / operative ADRG lists).")
@click.option("--compare", nargs=2, type=click.Path(dir_okay=False), help="Compare two catalogues (ours or the national layout) instead.")
@user_errors
def dip_catalog(history, policy, output, procedure_types, scheme, compare):
    """Build the local DIP catalogue from history (or compare two catalogues).

    \b
    Example:
      drgdip dip catalog history-2023-2025.parquet --policy region.toml -o dip-catalog.parquet
      drgdip dip catalog --compare dip-catalog.parquet national-dip.csv -o diff.csv
    """
    from drgdip.arrowio import write_table
    from drgdip.grouper.dip import api as dip_api
    if compare:
        diff = dip_api.compare_catalogs(*compare)
        st = diff["status"].to_pylist()
        click.echo(f"both: {st.count('both')}  only in {compare[0]}: {st.count('only_a')}  "
                   f"only in {compare[1]}: {st.count('only_b')}")
        if output:
            _refuse_overwrite(list(compare), output)
            write_table(diff, output)
            click.echo(f"wrote {output}")
        else:
            for r in [r for r in diff.to_pylist() if r["status"] == "both"][:20]:
                click.echo(f"{r['group_key']:<40} {r['score_a']:>10.4f} {r['score_b']:>10.4f}  x{r['score_ratio']}")
        return
    if not history or not output:
        raise UserError("give a HISTORY file and -o OUTPUT (or --compare A B)")
    _refuse_overwrite([history, policy, procedure_types], output)
    from drgdip.weights.dip_catalog import build_catalog
    cat = build_catalog(history, policy, procedure_types, scheme)
    dip_api.write_catalog(cat, output)
    m = dip_api.catalog_meta(cat)
    click.echo(f"wrote {output}: {m['core_groups']} core + {m['comprehensive_groups']} comprehensive groups "
               f"from {m['cases_used']} cases (trimmed {m['cases_trimmed']}), RIV {m['riv']}")
    for reason, n in m["history_excluded"].items():
        click.echo(f"left out: {n} history rows ({reason})")
    click.echo(f"procedure types: {m['procedure_type_source']}")
    for r in m["auxiliary"]["rows"]:
        if r["applied"]:
            click.echo(f"auxiliary {r['factor']} {r['label']}: x{r['coefficient']} ({r['rests_on_cases']} cases)")


@dip_group.command("recommend")
@click.option("--catalog", required=True, type=click.Path(dir_okay=False), help="DIP catalogue file.")
@click.option("--record", "record_json", required=True, help="One record as JSON (settlement-list field names or aliases).")
@click.option("--json", "as_json", is_flag=True, help="Print the candidates as JSON.")
@user_errors
def dip_recommend(catalog, record_json, as_json):
    """Every candidate DIP group of one record with its score and why it matches or not, best first.

    \b
    Example:
      drgdip dip recommend --catalog dip-catalog.parquet \\
        --record '{"diagnoses": ["K80.100"], "procedures": ["51.2300", "51.1000"], "age": 67}'
    """
    import json as _json

    from drgdip.grouper.dip import api as dip_api
    try:
        record = _json.loads(record_json)
    except _json.JSONDecodeError as exc:
        raise UserError(f"--record is not valid JSON: {exc}") from None
    recs = dip_api.recommend(record, catalog)
    if as_json:
        click.echo(_json.dumps(recs, ensure_ascii=False, indent=1))
        return
    if not recs:
        click.echo("no candidate group: the catalogue has no group for this diagnosis")
    for r in recs:
        mark = "*" if r["chosen"] else " "
        extra = f" coefficient x{r['coefficient']} -> {r['adjusted_score']}" if r["chosen"] else ""
        click.echo(f"{mark}{r['rank']:>2} {r['group_key']:<36} {r['kind']:<13} {r['score']:>10.4f} "
                   f"{r['match'] or 'no':<13} {r['why']}{extra}")



# --- demo, synth and report commands ---

@main.command("synth")
@click.option("-o", "--output", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Records file (.parquet, .arrow or .csv).")
@click.option("--scheme", type=click.Path(), help="Scheme folder or .drgscheme file (default: the built-in teaching scheme).")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same bytes.")
@click.option("--years", default="2024", show_default=True, help="Years, comma-separated (e.g. 2022,2023,2024).")
@click.option("--months", default=12, show_default=True, help="Months per year (1-12).")
@click.option("--hospitals", default=12, show_default=True, help="Number of hospitals (levels 3/2/1).")
@click.option("--records-per-month", default=2000, show_default=True, help="Mean discharges per month in the region.")
@click.option("--hospitals-out", type=click.Path(dir_okay=False), help="Also write the hospitals (id, level, ...) here.")
@user_errors
def synth_cmd(out, scheme, seed, years, months, hospitals, records_per_month, hospitals_out):
    """Synthesise a region's discharge records (synthetic, for learning and tests).

    \b
    Example:
      drgdip synth -o region.parquet --years 2023,2024 --seed 7
      drgdip synth -o bj.parquet --scheme ../shared/data/chs-drg/CHS_DRG_11_BJ --records-per-month 500
    """
    from drgdip.arrowio import write_table
    from drgdip.synth.region import load_params, make_hospitals, synthesize_region
    ys = [int(y) for y in years.split(",") if y.strip()]
    table = synthesize_region(scheme, seed=seed, years=ys, months=months, hospitals=hospitals,
                              records_per_month=records_per_month)
    write_table(table, out)
    if hospitals_out:
        write_table(make_hospitals(hospitals, seed, load_params()), hospitals_out)
    click.echo(f"{table.num_rows} records, {hospitals} hospitals, years {ys} -> {out}")


@main.command("demo")
@click.option("-o", "--output", "--out", "out", default="demo", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--seed", default=2024, show_default=True, help="Random seed of the synthetic region.")
@click.option("--records-per-month", type=int, help="Mean discharges per month (default: synth.toml [demo]).")
@click.option("--hospitals", type=int, help="Number of hospitals (default: synth.toml [demo]).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def demo_cmd(out, seed, records_per_month, hospitals, quiet):
    """Quick start: synthesise a region, compute weights, settle a year, write the report.

    Uses the built-in teaching scheme (not an official scheme) and synthetic records.

    \b
    Example:
      drgdip demo --out demo/
      drgdip report demo/ledger.db --outputs demo/settled -o demo/report.html
    """
    from drgdip.synth.demo import run_demo, summary_table
    result = run_demo(out, seed=seed, progress=not quiet, records_per_month=records_per_month, hospitals=hospitals)
    click.echo(summary_table(result))


@main.command("report")
@click.argument("ledger_path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--outputs", type=click.Path(file_okay=False),
              help="Folder holding the settled periods' outputs (<period>/cases.parquet) for group-level sections.")
@click.option("--hospitals", "hospitals_path", type=click.Path(dir_okay=False),
              help="CSV of hospital_id, name, level: names (and levels) in the tables.")
@click.option("--scheme", type=click.Path(), help="Scheme whose group names label the groups.")
@click.option("--findings", type=click.Path(dir_okay=False),
              help="Monitoring findings (drgdip monitor's output): the 智能监控 section.")
@click.option("--benefits", type=click.Path(dir_okay=False),
              help="Benefits per stay (drgdip benefits' output): the 患者负担 patient-burden section.")
@click.option("--persons", type=click.Path(dir_okay=False),
              help="The persons file the benefits were computed with (assistance classes), with --benefits.")
@user_errors
def report_cmd(ledger_path, out, outputs, hospitals_path, scheme, findings, benefits, persons):
    """Write the self-contained HTML report (Chinese and English) of a settled ledger.

    \b
    Example:
      drgdip report region.db --outputs settled/ --hospitals hospitals.csv --scheme chs11.drgscheme -o report.html
      drgdip report demo/ledger.db --outputs demo/settled --findings demo/findings.csv \\
          --benefits demo/benefits.parquet --persons demo/persons.csv -o report.html
    """
    from drgdip.weights.report.settlement_report import write_report
    from drgdip.weights.settlement.ledger import LedgerError
    try:
        _refuse_overwrite([ledger_path, hospitals_path, findings, benefits, persons], out)
        path = write_report(ledger_path, out, outputs=outputs, hospitals=hospitals_path, scheme=scheme,
                            findings=findings, benefits=benefits, persons=persons)
    except LedgerError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"report -> {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
