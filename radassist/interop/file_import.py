"""`radassist import` for interface files: HL7 v2 (.hl7, one or many messages) and FHIR R4 (.json).

The same mapping and amendment/cancellation rules as the listener. Problems are reported as
``file:line`` (HL7: the line of the message's MSH) or ``file:entry N`` position (FHIR: the bundle
index, reported in the line slot), naming fields, never values.
"""
from __future__ import annotations

from pathlib import Path

from radassist.ingest import ImportProblem, ImportReport, OrderFormatError
from radassist.interop.feed import (
    AMENDED,
    CANCELLED,
    DUPLICATE,
    NEW,
    REOPENED,
    FeedResult,
    apply_order,
)

INTERFACE_SUFFIXES = (".hl7", ".json")


def _account(report: ImportReport, result: FeedResult) -> None:
    report.imported += sum(result.counts.get(k, 0) for k in (NEW, AMENDED, REOPENED, CANCELLED))
    report.amended += result.counts.get(AMENDED, 0) + result.counts.get(REOPENED, 0)
    report.amended_after_decision += result.counts.get(REOPENED, 0)
    report.duplicates += result.counts.get(DUPLICATE, 0)


def import_hl7_file(db, path: Path, report: ImportReport, actor) -> FeedResult:
    from radassist.interop.hl7_orders import CANCEL_CONTROLS, IGNORED_CONTROLS, HL7FormatError, \
        parse_order_message, split_messages
    from radassist.interop.receiver import _field_of, to_order

    result = FeedResult()
    name = path.name
    prepared = []
    for line, text in split_messages(path.read_bytes()):
        try:
            msg = parse_order_message(text)
        except HL7FormatError as exc:
            report.read += 1
            report.problems.append(ImportProblem(name, line, str(exc)))
            continue
        if not msg.supported:
            report.read += 1
            report.problems.append(ImportProblem(name, line, f"message {msg.control_id}: unsupported message "
                                                             "type (not ORM^O01 or OMI^O23)"))
            continue
        report.read += max(1, len(msg.items) + len([e for e in msg.errors if e.index]))
        for err in msg.errors:
            report.problems.append(ImportProblem(name, line, f"message {msg.control_id} {err}"))
        for item in msg.items:
            if item.control in IGNORED_CONTROLS:
                continue
            try:
                order = to_order(item.record, item.control)
            except OrderFormatError as exc:
                report.problems.append(ImportProblem(name, line, f"message {msg.control_id} order {item.index}: "
                                                                 f"{exc} ({_field_of(exc)})"))
                continue
            meta = {**item.meta, "message_type": msg.message_type, "version": msg.version,
                    "sending_app": msg.sending_app, "sending_facility": msg.sending_facility,
                    "receiving_app": msg.receiving_app, "receiving_facility": msg.receiving_facility,
                    "control_id": msg.control_id}
            prepared.append((order, item.control, meta, item.control in CANCEL_CONTROLS))
    _apply(db, path, prepared, "hl7", report, result, actor)
    return result


def import_fhir_file(db, path: Path, report: ImportReport, actor) -> FeedResult:
    from radassist.ingest import order_from_record
    from radassist.interop.fhir_orders import read_fhir

    result = FeedResult()
    orders, problems = read_fhir(path.read_bytes())
    report.read += len(orders) + len(problems)
    for problem in problems:
        report.problems.append(ImportProblem(path.name, problem.index, f"entry {problem.index}: {problem.message}"))
    prepared = []
    for item in orders:
        try:
            order = order_from_record(item.record)
        except OrderFormatError as exc:
            report.problems.append(ImportProblem(path.name, item.index, f"entry {item.index}: {exc}"))
            continue
        prepared.append((order, "CA" if item.cancel else "NW", item.meta, item.cancel))
    _apply(db, path, prepared, "fhir", report, result, actor)
    return result


def _apply(db, path: Path, prepared, source: str, report: ImportReport, result: FeedResult, actor) -> None:
    """Short transactions (BEGIN IMMEDIATE, ``ingest.BATCH_SIZE`` orders each) so that other importers,
    the listener and the app wait at most one batch; the file's ``import`` event goes with the last."""
    from radassist.audit import record_event
    from radassist.ingest import BATCH_SIZE

    batches = [prepared[i:i + BATCH_SIZE] for i in range(0, len(prepared), BATCH_SIZE)] or [[]]
    for number, batch in enumerate(batches, start=1):
        batch_result = FeedResult()
        with db.session(immediate=True) as session:
            for order, control, meta, cancel in batch:
                apply_order(session, order, control, meta, source, batch_result, actor, cancel=cancel)
            if number == len(batches):
                counts = dict(result.counts)
                for key, value in batch_result.counts.items():
                    counts[key] = counts.get(key, 0) + value
                record_event(session, actor, "import", entity=f"file:{path.name}",
                             outcome="success" if not report.problems else "partial",
                             details={"format": source, **{k: v for k, v in sorted(counts.items())}})
        for key, value in batch_result.counts.items():
            result.counts[key] = result.counts.get(key, 0) + value
        result.order_ids.extend(batch_result.order_ids)
    _account(report, result)


def import_interface_file(db, path, report: ImportReport, actor) -> FeedResult | None:
    path = Path(path)
    try:
        if path.suffix.lower() == ".hl7":
            return import_hl7_file(db, path, report, actor)
        return import_fhir_file(db, path, report, actor)
    except OSError as exc:
        report.problems.append(ImportProblem(str(path), 0, f"cannot read file ({exc.strerror})"))
        return None
