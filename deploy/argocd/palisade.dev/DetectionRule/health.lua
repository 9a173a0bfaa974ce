-- Argo CD health of a palisade.dev DetectionRule (Lua 5.1, no standard libraries needed).
-- kstatus-style status: observedGeneration plus Ready and Paused conditions (a paused rule
-- also has Ready=False).
--   Progressing  no status yet, or the operator has not observed the latest generation
--   Suspended    paused by its palisade.dev/paused annotation (Paused=True)
--   Healthy      the rule runs (Ready=True)
--   Degraded     it cannot run (Ready=False for any other reason)
local function text(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end
local hs = { status = "Progressing", message = "Waiting for the Palisade operator" }
if obj.status == nil then
  return hs
end
if obj.status.observedGeneration == nil or (obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation) then
  hs.message = "Waiting for the Palisade operator to observe the latest spec"
  return hs
end
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Paused" and c.status == "True" then
    return { status = "Suspended", message = text(c, "Paused") }
  end
end
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Ready" and c.status == "True" then
    return { status = "Healthy", message = text(c, "Ready") }
  end
  if c.type == "Ready" and c.status == "False" then
    return { status = "Degraded", message = (c.reason or "NotReady") .. ": " .. text(c, "not ready") }
  end
end
return hs
