-- The FreeSWITCH half of the Gemini Live gateway's mod_audio_stream connector (see gemini.xml).
--
-- mod_audio_stream (community edition) plays nothing itself: each audio message from the gateway is
-- written to a temp file and announced as a mod_audio_stream::play event; any other text from the
-- gateway becomes a mod_audio_stream::json event. This script runs once, at FreeSWITCH start-up
-- (autoload_configs/lua.conf.xml: <param name="startup-script" value="gemini_events.lua"/>), for
-- every channel whose dialplan set gemini_stream:
--   mod_audio_stream::play        -> uuid_broadcast <uuid> <file> aleg   (queued: files play in order)
--   mod_audio_stream::json        -> {"type":"killAudio"}: uuid_break <uuid> all   (barge-in)
--   mod_audio_stream::disconnect  -> uuid_kill <uuid>   (the gateway ended the call)
--   DTMF                          -> uuid_audio_stream <uuid> send_text {"type":"dtmf","digit":"5"}

local api = freeswitch.API()
local events = freeswitch.EventConsumer("CUSTOM", "mod_audio_stream::play")
events:bind("CUSTOM", "mod_audio_stream::json")
events:bind("CUSTOM", "mod_audio_stream::disconnect")
events:bind("DTMF")

local function ours(uuid)
  local value = api:execute("uuid_getvar", uuid .. " gemini_stream")
  return value ~= nil and value ~= "" and value ~= "_undef_" and not value:find("^%-ERR")
end

while true do
  local event = events:pop(1, 1000)
  if event then
    local uuid = event:getHeader("Unique-ID")
    local name = event:getHeader("Event-Subclass") or event:getHeader("Event-Name")
    local body = event:getBody() or ""
    if uuid and ours(uuid) then
      if name == "mod_audio_stream::play" then
        local file = body:match('"file"%s*:%s*"([^"]+)"')
        if file then
          api:execute("uuid_broadcast", uuid .. " " .. file .. " aleg")
        end
      elseif name == "mod_audio_stream::json" then
        if body:find('"type"%s*:%s*"killAudio"') then
          api:execute("uuid_break", uuid .. " all")
        end
      elseif name == "mod_audio_stream::disconnect" then
        api:execute("uuid_kill", uuid .. " NORMAL_CLEARING")
      elseif name == "DTMF" then
        local digit = event:getHeader("DTMF-Digit")
        if digit and digit:match("^[0-9A-D%*#]$") then
          api:execute("uuid_audio_stream", uuid .. ' send_text {"type":"dtmf","digit":"' .. digit .. '"}')
        end
      end
    end
  end
end
