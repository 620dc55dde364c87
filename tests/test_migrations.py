"""The call records' schema migrations: new databases, today's databases, newer ones, at once."""

import json
import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Boolean,
    Column,
    Double,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.mysql import LONGTEXT

from pipecat_realtime_twilio.runner import migrations
from pipecat_realtime_twilio.runner.queries import CallQuery, calls_table, metadata, row_values
from pipecat_realtime_twilio.runner.records import CallRecord, latency_summary
from pipecat_realtime_twilio.runner.store import CallStore, StoreError

T0 = 1_760_000_000.0
NEW_COLUMNS = [c.name for c in calls_table.columns][6:]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.call)])
def db_url(request, tmp_path):
    """Each test runs on a SQLite file, and on a real PostgreSQL server (a `call` test)."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/calls.db"


def todays_table() -> Table:
    """The ``calls`` table exactly as the store made it before migrations (``create_all``)."""
    return Table(
        "calls",
        MetaData(),
        Column("call_sid", String(128), primary_key=True),
        Column("bot", String(200), nullable=False, index=True),
        Column("started_at", Double, nullable=False, index=True),
        Column("end_reason", String(200), index=True),
        Column("webhook_delivered", Boolean, nullable=False, index=True),
        Column("record", Text().with_variant(LONGTEXT(), "mysql", "mariadb"), nullable=False),
    )


def a_record(n: int) -> CallRecord:
    record = CallRecord(
        call_sid=f"CA{n:032d}",
        bot=f"bot{n % 3}",
        from_number=f"+1555000{n:04d}",
        to_number="+15550002222",
        direction="outbound" if n % 2 else "inbound",
        started_at=T0 + n,
        cost_usd=0.01 * n,
    )
    record.add_turn("caller", f"Question NUMBER {n}", at=T0 + n + 1)
    record.add_turn("bot", "Answer.", at=T0 + n + 2)
    record.latency = latency_summary([400.0 + n, 500.0])
    if n % 5 == 0:
        record.recording = {"location": f"/rec/{n}.wav", "bytes": 10}
    record.finish("caller_hung_up" if n % 4 else "failed: connect: quota", ended_at=T0 + n + 30)
    return record


def make_todays_database(url: str, records: list[CallRecord], broken: int = 0) -> None:
    """A database as today's code leaves it: the table, these rows, no version table."""
    engine = create_engine(url)
    table = todays_table()
    try:
        table.metadata.create_all(engine)
        with engine.begin() as connection:
            rows = [
                {
                    "call_sid": r.call_sid,
                    "bot": r.bot,
                    "started_at": r.started_at,
                    "end_reason": r.end_reason,
                    "webhook_delivered": False,
                    "record": r.to_json(),
                }
                for r in records
            ]
            rows += [
                {
                    "call_sid": f"CA-broken-{i}",
                    "bot": "x",
                    "started_at": T0,
                    "end_reason": None,
                    "webhook_delivered": True,
                    "record": "{not json",
                }
                for i in range(broken)
            ]
            if rows:
                connection.execute(table.insert(), rows)
    finally:
        engine.dispose()


def schema_of(url: str) -> tuple[tuple[str, ...], list]:
    """The database's revisions, and how its tables differ from ``queries.calls_table``."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": migrations.VERSION_TABLE}
            )
            return migrations.revisions(connection), compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_a_new_database_gets_the_newest_schema(db_url):
    with CallStore(db_url) as store:
        store.save(a_record(1))
        assert store.get(a_record(1).call_sid) == a_record(1)
    revisions, differences = schema_of(db_url)
    assert revisions == (migrations.head(),) == ("0004",)
    assert differences == []


def test_todays_database_is_stamped_and_upgraded_with_its_rows_filled(db_url):
    records = [a_record(n) for n in range(1, 1101)]  # more than one batch of 500
    make_todays_database(db_url, records, broken=2)
    with CallStore(db_url) as store:
        assert store.get(records[7].call_sid) == records[7]
        page = store.search(CallQuery(search="number 1100"))
        assert [r.call_sid for r in page.records] == [records[-1].call_sid]
        # The unreadable rows stay, with empty new columns; reading them logs and skips.
        assert store.search(CallQuery(bot="x")).total == 2
    revisions, differences = schema_of(db_url)
    assert revisions == ("0004",) and differences == []

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = {row.call_sid: row for row in connection.execute(select(calls_table))}
    finally:
        engine.dispose()
    for record in records:  # the backfill derives what save() writes
        expected = row_values(record)
        got = {name: getattr(rows[record.call_sid], name) for name in NEW_COLUMNS}
        assert got == {name: expected[name] for name in NEW_COLUMNS}, record.call_sid
    broken = rows["CA-broken-0"]
    assert broken.from_number is None and broken.transcript_text is None
    assert broken.has_recording is False


def test_an_empty_database_of_today_is_upgraded(db_url):
    make_todays_database(db_url, [])
    with CallStore(db_url) as store:
        assert store.list() == []
    assert schema_of(db_url) == (("0004",), [])


def test_a_database_at_the_head_is_left_alone(db_url):
    CallStore(db_url).close()
    engine = create_engine(db_url)
    statements: list[str] = []
    try:
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert migrations.upgrade(engine) is None
    finally:
        engine.dispose()
    writes = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE", "BEGIN")
    assert any("SELECT" in s for s in statements)
    assert not [s for s in statements if s.lstrip().upper().startswith(writes)]


def test_a_database_of_a_newer_version_is_refused_in_one_line(db_url):
    CallStore(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0099'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError) as raised:
        CallStore(db_url)
    message = str(raised.value)
    assert message.startswith("DATABASE_URL: ") and "\n" not in message
    assert "0099" in message and "newer version" in message
    assert schema_of(db_url)[0] == ("0099",)  # nothing changed


def test_two_stores_open_a_new_database_at_once(db_url):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    stores: list[CallStore] = []

    def open_store(n: int) -> None:
        barrier.wait()
        try:
            store = CallStore(db_url)
            store.save(a_record(n))
            stores.append(store)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_store, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert stores[0].search(CallQuery()).total == 4
    finally:
        for store in stores:
            store.close()
    assert schema_of(db_url) == (("0004",), [])


def test_downgrade_to_todays_table_and_up_again(db_url):
    with CallStore(db_url) as store:
        store.save(a_record(3))
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            command.downgrade(migrations.alembic_config(connection), "0001")
            connection.commit()
            columns = {c["name"] for c in inspect(connection).get_columns("calls")}
        assert columns == {c.name for c in todays_table().columns}
        assert migrations.upgrade(engine) == ("0001", "0004")
    finally:
        engine.dispose()
    with CallStore(db_url) as store:
        [record] = store.search(CallQuery(number="+15550000003")).records
        assert record == a_record(3)


def test_env_refuses_to_run_without_a_connection():
    with pytest.raises(RuntimeError, match="run on a connection"):
        command.upgrade(migrations.alembic_config(), "head")


def test_the_record_column_is_json_of_the_record(tmp_path):
    url = f"sqlite:///{tmp_path}/calls.db"
    with CallStore(url) as store:
        store.save(a_record(5))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(select(calls_table)).one()
    finally:
        engine.dispose()
    assert json.loads(row.record)["call_sid"] == a_record(5).call_sid
    assert row.has_recording is True and row.response_ms == "[405.0, 500.0]"
    assert row.transcript_text == "question number 5\nanswer."
