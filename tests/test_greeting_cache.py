"""The greeting cache on its own: keys, bounds, files written atomically and checked when read."""

import os

import pytest

from pipecat_realtime_twilio.agent.greeting_cache import GreetingCache, GreetingKey, variant_of
from pipecat_realtime_twilio.agent.realtime import RealtimeAgent
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.runner.greetings import RunnerGreetings
from pipecat_realtime_twilio.runner.records import CallRecord
from pipecat_realtime_twilio.settings import Settings

KEY = GreetingKey(
    bot="desk", engine="realtime", voice="marin", model="gpt-realtime", text="Hello, Acme here."
)
AUDIO = bytes(range(256)) * 40  # 10 240 bytes: 1.28 s of μ-law


def changed(**values) -> GreetingKey:
    fields = {**KEY.__dict__, **values}
    return GreetingKey(**fields)


def test_get_gives_what_put_kept_and_none_before():
    cache = GreetingCache()
    assert cache.get(KEY) is None
    assert cache.put(KEY, AUDIO)
    assert cache.get(KEY) == AUDIO
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize(
    "other",
    [
        {"text": "Hello, Acme here!"},
        {"voice": "cedar"},
        {"model": "gpt-realtime-mini"},
        {"bot": "sales"},
        {"engine": "live"},
        {"variant": variant_of(1.2, "Be brief.")},
    ],
)
def test_any_other_text_voice_model_bot_or_engine_is_another_key(other):
    cache = GreetingCache()
    cache.put(KEY, AUDIO)
    assert cache.get(changed(**other)) is None
    assert changed(**other).digest() != KEY.digest()


def test_variant_follows_what_shapes_the_audio():
    assert variant_of(None, "Be brief.") == variant_of(None, "Be brief.")
    assert variant_of(None, "Be brief.") != variant_of(1.1, "Be brief.")
    assert variant_of(None, "Be brief.") != variant_of(None, "Be brief. Speak French.")


def test_memory_is_bounded_by_entries_and_bytes_least_recently_used_first():
    cache = GreetingCache(max_entries=2, max_bytes=3 * len(AUDIO))
    keys = [changed(text=f"greeting {n}") for n in range(3)]
    cache.put(keys[0], AUDIO)
    cache.put(keys[1], AUDIO)
    cache.get(keys[0])  # used: the other one goes first
    cache.put(keys[2], AUDIO)
    assert len(cache) == 2 and cache.get(keys[1]) is None
    assert cache.get(keys[0]) == AUDIO and cache.get(keys[2]) == AUDIO
    small = GreetingCache(max_bytes=len(AUDIO) + 10)
    small.put(keys[0], AUDIO)
    small.put(keys[1], AUDIO)
    assert len(small) == 1 and small.size_bytes == len(AUDIO)


def test_a_greeting_too_long_or_empty_is_not_kept():
    cache = GreetingCache(max_greeting_ms=1000)
    assert not cache.put(KEY, AUDIO)  # 1280 ms
    assert not cache.put(KEY, b"")
    assert cache.get(KEY) is None


def test_files_serve_another_cache_on_the_same_folder(tmp_path):
    GreetingCache(tmp_path).put(KEY, AUDIO)
    restarted = GreetingCache(tmp_path)
    assert restarted.get(KEY) == AUDIO
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY.digest()}.greeting"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],  # short
        lambda data: data[:-10] + b"\x00" * 10,  # corrupt audio
        lambda data: data[:5],  # cut inside the header
        lambda data: b"",  # empty (a crash before the data reached the disk)
        lambda data: b"something else entirely",
    ],
)
def test_a_short_or_corrupt_file_is_ignored_and_made_again(tmp_path, damage):
    GreetingCache(tmp_path).put(KEY, AUDIO)
    path = tmp_path / f"{KEY.digest()}.greeting"
    path.write_bytes(damage(path.read_bytes()))
    cache = GreetingCache(tmp_path)
    assert cache.get(KEY) is None and cache.ignored_files == 1
    assert cache.put(KEY, AUDIO)
    assert GreetingCache(tmp_path).get(KEY) == AUDIO


def test_a_file_of_another_key_under_this_name_is_ignored(tmp_path):
    other = changed(text="Good morning.")
    GreetingCache(tmp_path).put(other, AUDIO)
    (tmp_path / f"{other.digest()}.greeting").rename(tmp_path / f"{KEY.digest()}.greeting")
    assert GreetingCache(tmp_path).get(KEY) is None


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path, monkeypatch):
    cache = GreetingCache(tmp_path)
    cache.put(KEY, AUDIO)
    replaced = []
    real_replace = os.replace

    def watch(source, target):
        replaced.append((str(source), str(target)))
        assert GreetingCache(tmp_path).get(KEY) == AUDIO  # the old file, whole, until now
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", watch)
    cache.put(KEY, AUDIO[::-1])
    assert len(replaced) == 1 and replaced[0][1].endswith(".greeting")
    assert GreetingCache(tmp_path).get(KEY) == AUDIO[::-1]
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY.digest()}.greeting"]


def test_the_folder_keeps_at_most_max_entries_files_oldest_out(tmp_path):
    cache = GreetingCache(tmp_path, max_entries=2)
    keys = [changed(text=f"greeting {n}") for n in range(3)]
    for n, key in enumerate(keys):
        cache.put(key, AUDIO)
        os.utime(tmp_path / f"{key.digest()}.greeting", (1000 + n, 1000 + n))
    cache.put(keys[2], AUDIO)  # pruned after each write
    names = sorted(p.name for p in tmp_path.glob("*.greeting"))
    assert names == sorted(f"{k.digest()}.greeting" for k in keys[1:])


def test_an_unwritable_folder_is_logged_and_memory_goes_on(tmp_path, monkeypatch):
    cache = GreetingCache(tmp_path)

    def refuse(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pathlib.Path.write_bytes", refuse)
    assert cache.put(KEY, AUDIO)
    assert cache.get(KEY) == AUDIO
    assert list(tmp_path.iterdir()) == []


def test_a_greeting_cache_dir_that_cannot_be_used_stops_startup_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = Settings(_env_file=None, greeting_cache_dir=str(blocker / "greetings"))
    with pytest.raises(SettingsError) as e:
        RunnerGreetings(settings)
    assert str(e.value).startswith("GREETING_CACHE_DIR: ") and "\n" not in str(e.value)


def test_agent_key_names_bot_voice_model_text_and_variant():
    agent = RealtimeAgent(
        instructions="Be brief.", greeting="Hi there.", voice="cedar", api_key="sk-test"
    )
    key = agent.greeting_key("desk")
    assert key is not None
    assert (key.bot, key.engine, key.voice, key.model, key.text) == (
        "desk",
        "realtime",
        "cedar",
        agent.model,
        "Hi there.",
    )
    faster = RealtimeAgent(
        instructions="Be brief.", greeting="Hi there.", voice="cedar", speed=1.2, api_key="sk-test"
    )
    assert faster.greeting_key("desk") != key
    silent = RealtimeAgent(instructions="Be brief.", api_key="sk-test")
    assert silent.greeting_key("desk") is None
    cache = GreetingCache()
    assert not agent.use_greeting_cache(cache, "desk")  # captured on first use instead
    cache.put(key, AUDIO)
    assert RealtimeAgent(
        instructions="Be brief.", greeting="Hi there.", voice="cedar", api_key="sk-test"
    ).use_greeting_cache(cache, "desk")


def test_record_keeps_the_greeting_source_and_reads_old_records():
    record = CallRecord(call_sid="CA1", greeting="cache")
    assert CallRecord.from_json(record.to_json()).greeting == "cache"
    assert CallRecord.from_dict({"call_sid": "CA1"}).greeting is None
