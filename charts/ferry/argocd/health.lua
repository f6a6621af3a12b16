-- Argo CD health check for ferry.dev/CopyJob.
--
-- Reads the CopyJob's metav1 conditions (the operator's contract; status.phase is display only):
--   Healthy      Succeeded=True
--   Degraded     Failed=True, Stalled=True or Succeeded=False
--   Suspended    spec.suspend is true, or Suspended=True
--   Progressing  otherwise, and while status.observedGeneration < metadata.generation
-- The CopyJob also sets the kstatus pair Reconciling/Stalled, so Flux and kpt wait on it too.
--
-- Uses only the base library (no string, math, io, os): it runs unchanged when pasted into argocd-cm,
-- where those libraries are not loaded. Install: see charts/ferry/README.md.
local hs = {status = "Progressing", message = "Waiting for the operator to observe this CopyJob"}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  local reason = ""
  local message = ""
  if c.reason ~= nil then
    reason = tostring(c.reason)
  end
  if c.message ~= nil then
    message = tostring(c.message)
  end
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  return reason
end

local function answer(status, c, fallback)
  hs.status = status
  hs.message = fallback
  if c ~= nil then
    local text = describe(c)
    if text ~= "" then
      hs.message = text
    end
  end
  return hs
end

if obj.status == nil then
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local succeeded = find(conditions, "Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  return answer("Healthy", succeeded, "CopyJob succeeded")
end
local failed = find(conditions, "Failed")
if failed ~= nil and failed.status == "True" then
  return answer("Degraded", failed, "CopyJob failed")
end
local stalled = find(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return answer("Degraded", stalled, "CopyJob is stalled")
end
if succeeded ~= nil and succeeded.status == "False" then
  return answer("Degraded", succeeded, "CopyJob did not succeed")
end
local suspended = find(conditions, "Suspended")
if (obj.spec ~= nil and obj.spec.suspend == true) or (suspended ~= nil and suspended.status == "True") then
  if suspended ~= nil and suspended.status == "True" then
    return answer("Suspended", suspended, "CopyJob is suspended")
  end
  return answer("Suspended", nil, "CopyJob is suspended")
end
for _, kind in ipairs({"Progressing", "Reconciling", "Succeeded", "Planned"}) do
  local c = find(conditions, kind)
  if c ~= nil and describe(c) ~= "" then
    return answer("Progressing", c, "")
  end
end
if obj.status.phase ~= nil then
  hs.message = "CopyJob is " .. tostring(obj.status.phase)
end
return hs
