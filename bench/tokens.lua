-- wrk script: POST /token with a bearer token from the file $TOKENS (one a line).
--   LIMIT=N   only the first N lines (N distinct pipelines, or N distinct tokens)
--   THREADS=T the number of wrk threads (-t T)
-- Thread k of T takes lines k, k+T, k+2T, …: two threads never present the same token at
-- about the same time, so a list longer than the verified-token cache cycles through it
-- without a single reuse (every presentation is a fresh verification).
local created = 0

function setup(thread)
  thread:set("id", created)
  created = created + 1
end

function init(args)
  local limit = tonumber(os.getenv("LIMIT") or "0") or 0
  local total = tonumber(os.getenv("THREADS") or "1") or 1
  local lines = {}
  for line in io.lines(os.getenv("TOKENS")) do
    if line ~= "" then
      lines[#lines + 1] = line
      if limit > 0 and #lines >= limit then break end
    end
  end
  mine = {}
  for i = id + 1, #lines, total do mine[#mine + 1] = lines[i] end
  if #mine == 0 then mine = lines end
  lines = nil
  at = 0
end

function request()
  at = at % #mine + 1
  return wrk.format("POST", "/token", {
    ["Authorization"] = "Bearer " .. mine[at],
    ["Content-Length"] = "0",
  }, nil)
end
