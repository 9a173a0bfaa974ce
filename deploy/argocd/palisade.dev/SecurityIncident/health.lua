-- Argo CD health of a palisade.dev SecurityIncident (Lua 5.1, no standard libraries needed).
-- Incidents are written by the operator's collector, never by users. Health describes the
-- object, not the attack: an open incident is Healthy, with its risk and summary as message
-- (Degraded would page the owners of the Application for traffic they cannot sync away).
--   Progressing  the collector has not written the status yet
--   Healthy      Active (message: risk level and summary) or Archived
--   Degraded     the operator reports Ready=False on it
local function text(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end
local hs = { status = "Progressing", message = "Waiting for the Palisade collector" }
if obj.status == nil then
  return hs
end
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Ready" and c.status == "False" then
    return { status = "Degraded", message = (c.reason or "NotReady") .. ": " .. text(c, "not ready") }
  end
end
local summary = obj.status.displayName or obj.metadata.name
if obj.status.state == "Archived" then
  return { status = "Healthy", message = "Archived: " .. summary }
end
if obj.status.state == "Active" then
  return { status = "Healthy", message = (obj.status.riskLevel or "Unknown") .. " risk: " .. summary }
end
return hs
