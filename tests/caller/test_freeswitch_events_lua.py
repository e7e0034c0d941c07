"""examples/freeswitch/gemini_events.lua against a stand-in of FreeSWITCH's Lua API (``freeswitch.API``,
``freeswitch.EventConsumer``): each event the module fires becomes the right API command, for the
gateway's channels only. Needs a Lua interpreter (``apt-get install lua5.4``, as .ci/run does)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.needs import unavailable

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "freeswitch" / "gemini_events.lua"
LUA = next((p for name in ("lua5.4", "lua5.3", "lua5.1", "lua", "luajit") if (p := shutil.which(name))), None)

HARNESS = """
local calls = {}
local function ev(h, body)
  return {getHeader = function(_, k) return h[k] end, getBody = function() return body end}
end
local queue = {
  ev({["Unique-ID"] = "u1", ["Event-Subclass"] = "mod_audio_stream::play"},
     '{"audioDataType":"raw","sampleRate":16000,"file":"/tmp/u1_0.tmp.r16"}'),
  ev({["Unique-ID"] = "u1", ["Event-Subclass"] = "mod_audio_stream::json"}, '{"type":"killAudio"}'),
  ev({["Unique-ID"] = "u1", ["Event-Subclass"] = "mod_audio_stream::json"}, '{"type":"other"}'),
  ev({["Unique-ID"] = "u1", ["Event-Name"] = "DTMF", ["DTMF-Digit"] = "5"}, nil),
  ev({["Unique-ID"] = "u2", ["Event-Name"] = "DTMF", ["DTMF-Digit"] = "7"}, nil),
  ev({["Unique-ID"] = "u1", ["Event-Subclass"] = "mod_audio_stream::disconnect"},
     '{"status":"disconnected"}'),
}
freeswitch = {
  API = function() return {execute = function(_, cmd, args)
    if cmd == "uuid_getvar" then return args:match("^u1 ") and "+OK Success" or "_undef_" end
    calls[#calls + 1] = cmd .. " " .. args
    return "+OK"
  end} end,
  EventConsumer = function() return {bind = function() end, pop = function()
    if #queue == 0 then for _, c in ipairs(calls) do print(c) end os.exit(0) end
    return table.remove(queue, 1)
  end} end,
}
dofile(...)
"""


def test_the_event_script_turns_module_events_into_api_commands(tmp_path: Path) -> None:
    if LUA is None:
        unavailable("no Lua interpreter: apt-get install lua5.4")
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS)
    assert LUA is not None
    out = subprocess.run(
        [LUA, str(harness), str(SCRIPT)], capture_output=True, text=True, timeout=10, check=True
    )
    assert out.stdout.splitlines() == [
        "uuid_broadcast u1 /tmp/u1_0.tmp.r16 aleg",
        "uuid_break u1 all",
        'uuid_audio_stream u1 send_text {"type":"dtmf","digit":"5"}',
        "uuid_kill u1 NORMAL_CLEARING",
    ]
