-- Shared by the plugin drivers: a JSON result written to $CODEDEC_TEST_OUT once (on success, on
-- error or at the global deadline $CODEDEC_TEST_DEADLINE_MS), bounded polling on the main loop,
-- and the ghost text as the plugin drew it (its extmark).
local M = { result = { steps = {} }, done = false }

function M.finish(err)
  if M.done then return end
  M.done = true
  M.result.error = err
  M.result.status = require("codedec").status_line()
  vim.fn.writefile({ vim.json.encode(M.result) }, vim.env.CODEDEC_TEST_OUT)
  vim.defer_fn(function() vim.cmd("qa!") end, 200) -- let the last notification leave
end

vim.defer_fn(function() M.finish("deadline: stuck at step " .. #M.result.steps) end,
  tonumber(vim.env.CODEDEC_TEST_DEADLINE_MS))

-- wait_for(what, cond, ms, then_fn): poll cond every 20 ms on the main loop, then run then_fn.
function M.wait_for(what, cond, ms, then_fn)
  local t0 = vim.uv.now()
  local function poll()
    if M.done then return end
    local ok, v = pcall(cond)
    if not ok then return M.finish(what .. ": " .. tostring(v)) end
    if v then
      table.insert(M.result.steps, what)
      local ok2, err = pcall(then_fn)
      if not ok2 then M.finish(what .. ": " .. tostring(err)) end
    elseif vim.uv.now() - t0 > ms then
      M.finish("timed out waiting for: " .. what)
    else
      vim.defer_fn(poll, 20)
    end
  end
  poll()
end

function M.lines() return vim.api.nvim_buf_get_lines(0, 0, -1, false) end

function M.extmark_text()
  local ns = vim.api.nvim_create_namespace("codedec")
  local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local d = marks[1][4]
  local parts = { table.concat(vim.tbl_map(function(c) return c[1] end, d.virt_text or {})) }
  for _, l in ipairs(d.virt_lines or {}) do
    table.insert(parts, table.concat(vim.tbl_map(function(c) return c[1] end, l)))
  end
  return { text = table.concat(parts, "\n"), row = marks[1][2], col = marks[1][3], pos = d.virt_text_pos }
end

-- Wrap `client.request` so every final inlineCompletion answer lands in result.answers (checked
-- independently of the plugin's own bookkeeping); result.rewrite, when set, replaces the answer's
-- text after the real round trip (the random model hardly ever emits a line break).
function M.record_answers(client)
  M.result.answers = M.result.answers or {}
  local orig = client.request
  client.request = function(self, method, params, handler, bufnr)
    local id
    local ok, rid = orig(self, method, params, function(e, res, ctx, cfg)
      if method == "textDocument/inlineCompletion" and not e then
        local item = res and res.items and res.items[1]
        if item and M.result.rewrite then
          item.insertText = M.result.rewrite
        end
        table.insert(M.result.answers, { id = id, text = item and item.insertText or "", client = self.id })
      end
      return handler(e, res, ctx, cfg)
    end, bufnr)
    id = rid
    return ok, rid
  end
end

function M.setup_plugin()
  vim.opt.runtimepath:prepend(vim.env.CODEDEC_TEST_PLUGIN)
  local codedec = require("codedec")
  codedec.setup({
    cmd = vim.json.decode(vim.env.CODEDEC_TEST_CMD),
    model = "tiny-random",
    max_tokens = 24,
    debounce_ms = 30,
    settings = vim.json.decode(vim.env.CODEDEC_TEST_SETTINGS),
  })
  return codedec
end

-- Load the plugin, open $CODEDEC_TEST_FILE, wait for the client (recording its answers) and for
-- the model; then then_fn(codedec, client). Errors end the run (written to the result).
function M.start_ready(then_fn)
  local ok, err = pcall(function()
    local codedec = M.setup_plugin()
    vim.cmd("edit " .. vim.fn.fnameescape(vim.env.CODEDEC_TEST_FILE))
    local client
    M.wait_for("client started", function()
      client = vim.lsp.get_clients({ name = "codedec" })[1]
      return client ~= nil
    end, 10000, function()
      M.record_answers(client)
      M.wait_for("model ready", function() return codedec.status().status == "idle" end, 30000, function()
        then_fn(codedec, client)
      end)
    end)
  end)
  if not ok then M.finish(tostring(err)) end
end

return M
