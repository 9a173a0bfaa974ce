-- Argo CD health of a palisade.dev SecurityAction (Lua 5.1, no standard libraries needed).
-- The operator writes kstatus-style status: observedGeneration plus Ready, Paused and Expired
-- conditions (a paused or expired action also has Ready=False).
--   Progressing  no status yet, or the operator has not observed the latest generation
--   Suspended    paused by a palisade.dev/paused annotation on the action or its namespace
--   Healthy      in the policy bundle (Ready=True), or expired as its ttl/expireTime declared
--   Degraded     cannot be compiled (Ready=False, e.g. a missing ConfigMap or rule), or enforced by
--                no pod (Ready=False, NoSelectedPods: its workloadSelector selects no injected pod)
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
local conditions = obj.status.conditions or {}
local function find(type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end
local paused = find("Paused")
if paused ~= nil and paused.status == "True" then
  return { status = "Suspended", message = text(paused, "Paused") }
end
local expired = find("Expired")
if expired ~= nil and expired.status == "True" then
  return { status = "Healthy", message = "Expired: " .. text(expired, "Expired") }
end
local ready = find("Ready")
if ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = text(ready, "Active") }
end
if ready ~= nil and ready.status == "False" then
  return { status = "Degraded", message = (ready.reason or "NotReady") .. ": " .. text(ready, "not ready") }
end
return hs
