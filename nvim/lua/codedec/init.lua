--- codedec.nvim: inline (ghost-text) completion from `codedec serve` in Neovim >= 0.11.
---
--- What it does:
---   * starts one `codedec serve` language server (vim.lsp.start, shared by every buffer) for the
---     enabled filetypes, passing the settings as initializationOptions;
---   * in Insert mode, after each change (debounced), asks `textDocument/inlineCompletion` at the
---     cursor, cancelling the previous request (client:cancel_request);
---   * shows the suggestion as virtual text (extmarks): the first line inline at the cursor, the
---     other lines as virt_lines below; it grows while `codedec/partial` notifications
---     {id, uri, text} arrive for the running request, then the final (cleaned) text replaces it;
---   * keeps the rest of a suggestion while you type its first characters (no new request);
---   * <Tab> accepts, <C-Right> accepts one word, <C-l> accepts one line, <C-]> dismisses; each key
---     does its normal thing when no suggestion is shown (expr mappings). Moving the cursor,
---     leaving Insert mode or editing elsewhere dismisses. Accept/dismiss are reported as `codedec/accept` / `codedec/reject`
---     notifications (the server writes them to its local telemetry log).
---   * :CodedecStatus prints the state: starting (model loading) / idle / generating / error /
---     stopped, with the last latency;
---   * a server that dies (not stopped by Neovim) is restarted with backoff (1 s, 2 s, 4 s ... up to
---     30 s; after 5 crashes in 3 minutes it stays down until :CodedecRestart) and every buffer it
---     served is attached to the new one.
---
--- What it is not: a completion-menu source (the server also answers textDocument/completion for
--- that), nor a place for completion heuristics (when to complete and how to clean the text are the
--- server's job, shared by every editor).
---
--- Usage: require("codedec").setup({ cmd = { "/path/to/.venv/bin/codedec", "serve" },
---   model = "smollm2", filetypes = { "python" }, max_tokens = 64, debounce_ms = 100 })

local M = {}

local ns = vim.api.nvim_create_namespace("codedec")
local REQUEST_CANCELLED = -32800

M.defaults = {
  cmd = { "codedec", "serve" }, -- the server command (stdio)
  model = nil, -- e.g. "smollm2", "tiny-random", "deepseek-coder"; nil = the server's default
  filetypes = { "python" },
  max_tokens = nil, -- nil = the server's default (64)
  time_budget_ms = nil,
  decoding = nil, -- list of decoding components, as `--decoding`
  line_mode = nil, -- "auto" | "single" | "multi"
  settings = {}, -- any other initializationOptions, passed as is (e.g. { telemetryPath = "" })
  debounce_ms = 100, -- client-side wait after the last keystroke before asking
  keymaps = { accept = "<Tab>", accept_word = "<C-Right>", accept_line = "<C-l>", dismiss = "<C-]>" }, -- false disables one
  hl_group = "CodedecSuggestion", -- linked to Comment unless you define it
}

M.config = vim.deepcopy(M.defaults)

-- One server, one suggestion at a time (there is one cursor).
local state = {
  status = "stopped", -- stopped | starting | idle | generating | error
  message = nil, -- detail for starting / error
  latency_ms = nil, -- last request: sent -> final answer
  partials = 0, -- codedec/partial notifications seen by the last answered request
}
local pending = nil -- { id, client, bufnr, row, col, tick, t0 } the request in flight
local sug = nil -- { id, client, bufnr, uri, row, col, text, shown } the suggestion on screen
local timer = nil
local crashes = {} -- uv.now() of each server crash in the last RESTART.window_ms
local RESTART = { base_ms = 1000, max_ms = 30000, max_crashes = 5, window_ms = 3 * 60 * 1000 }

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function in_insert()
  return vim.api.nvim_get_mode().mode:sub(1, 1) == "i"
end

local function get_client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr, name = "codedec" })[1]
end

local function notify(s, method, extra)
  if s and s.id and s.client and not s.client:is_stopped() then
    s.client:notify(method, vim.tbl_extend("force", { id = s.id, uri = s.uri }, extra or {}))
  end
end

-- ---- rendering

local function clear(bufnr)
  if bufnr and vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

--- Draw `text` at (row, col): first line inline, the others as virtual lines below.
local function render(bufnr, row, col, text)
  clear(bufnr)
  if text == "" then
    return
  end
  local hl = M.config.hl_group
  local lines = vim.split(text, "\n", { plain = true })
  local opts = { virt_text = { { lines[1], hl } }, virt_text_pos = "inline", hl_mode = "combine" }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], hl } })
    end
  end
  pcall(vim.api.nvim_buf_set_extmark, bufnr, ns, row, col, opts)
end

local function set_suggestion(s)
  sug = s
  render(s.bufnr, s.row, s.col, s.text)
  s.shown = s.shown or s.text ~= ""
end

--- Drop the suggestion; `reason` (if any) is reported as codedec/reject when it was shown.
local function dismiss(reason)
  if sug then
    if reason and sug.shown then
      notify(sug, "codedec/reject", { reason = reason })
    end
    clear(sug.bufnr)
    sug = nil
  end
end

local function cancel_pending()
  if timer then
    timer:stop()
  end
  if pending then
    if not pending.client:is_stopped() then
      pending.client:cancel_request(pending.id)
    end
    pending = nil
    if state.status == "generating" then
      state.status = "idle"
    end
  end
end

-- ---- requests

local function on_result(req, err, result)
  if pending ~= req then
    return -- superseded or cancelled
  end
  pending = nil
  state.latency_ms, state.partials = (vim.uv.hrtime() - req.t0) / 1e6, req.partials
  if err then
    if err.code ~= REQUEST_CANCELLED then
      state.status, state.message = "error", err.message
    end
    if sug and sug.id == req.id then
      dismiss(nil)
    end
    return
  end
  state.status = "idle"
  local item = result and result.items and result.items[1]
  local text = item and item.insertText or ""
  if type(text) == "table" then
    text = text.value or "" -- a StringValue (snippet): shown as plain text
  end
  local row, col = cursor()
  local valid = vim.api.nvim_get_current_buf() == req.bufnr and in_insert() and row == req.row and col == req.col
    and vim.api.nvim_buf_get_changedtick(req.bufnr) == req.tick
  if not valid or text == "" then
    if sug and sug.id == req.id then
      dismiss(nil) -- the partial text is gone: the server decided there is nothing to show
    end
    return
  end
  set_suggestion(vim.tbl_extend("force", sug and sug.id == req.id and sug or {}, {
    id = req.id, client = req.client, bufnr = req.bufnr, uri = req.uri, row = row, col = col, text = text,
  }))
end

local function on_partial(_, params)
  local req = pending
  if not (req and params and params.id == req.id and params.uri == req.uri) then
    return
  end
  req.partials = req.partials + 1
  local row, col = cursor()
  if row == req.row and col == req.col and type(params.text) == "string" then
    set_suggestion(vim.tbl_extend("force", sug or {}, {
      id = req.id, client = req.client, bufnr = req.bufnr, uri = req.uri, row = row, col = col,
      text = params.text,
    }))
  end
end

--- Ask for a completion at the cursor of `bufnr` (cancels the previous request).
function M.request(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  cancel_pending()
  local client = get_client(bufnr)
  if not client or not client.initialized or vim.api.nvim_get_current_buf() ~= bufnr or not in_insert() then
    return
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local row, col = cursor()
  local req = {
    client = client, bufnr = bufnr, uri = params.textDocument.uri, row = row, col = col,
    tick = vim.api.nvim_buf_get_changedtick(bufnr), t0 = vim.uv.hrtime(), partials = 0,
  }
  local ok, id = client:request("textDocument/inlineCompletion", params, function(err, result)
    on_result(req, err, result)
  end, bufnr)
  if ok then
    req.id, pending = id, req
    if state.status ~= "starting" then
      state.status = "generating"
    end
  end
end

local function schedule_request(bufnr)
  cancel_pending()
  timer = timer or vim.uv.new_timer()
  timer:start(M.config.debounce_ms, 0, vim.schedule_wrap(function()
    M.request(bufnr)
  end))
end

-- ---- accept / dismiss

--- The part of the suggestion already typed by the user: returns what is left, or nil when the
--- cursor left the suggestion (another line, before it, or typed text that differs).
local function remaining(s)
  if vim.api.nvim_get_current_buf() ~= s.bufnr then
    return nil
  end
  local row, col = cursor()
  if row ~= s.row or col < s.col then
    return nil
  end
  local typed = vim.api.nvim_buf_get_text(s.bufnr, row, s.col, row, col, {})[1] or ""
  if s.text:sub(1, #typed) ~= typed then
    return nil
  end
  return s.text:sub(#typed + 1)
end

--- The part of `text` that accepting `part` takes: "line" -> leading blank lines/indentation + one
--- line of code; "word" -> leading white space + one identifier or number, else one other
--- character; nil -> all of it.
local function part_of(text, part)
  if part == "line" then
    return text:match("^%s*[^\n]*")
  elseif part == "word" then
    return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]") or text
  end
  return text
end

--- Insert the suggestion, or its next `part` ("word", "line"; true means "line") at its position.
function M.accept(part)
  local s = sug
  if not s then
    return
  end
  if part == true then
    part = "line" -- accept(true): the older spelling
  end
  local text = part_of(s.text, part)
  local rest = s.text:sub(#text + 1)
  cancel_pending() -- accepting a partial suggestion: the rest of its generation is not needed
  local lines = vim.split(text, "\n", { plain = true })
  clear(s.bufnr)
  sug = nil
  vim.api.nvim_buf_set_text(s.bufnr, s.row, s.col, s.row, s.col, lines)
  local row = s.row + #lines - 1
  local col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  notify(s, "codedec/accept", { kind = part or "full", chars = vim.fn.strchars(text) })
  if rest ~= "" then
    set_suggestion(vim.tbl_extend("force", s, { row = row, col = col, text = rest }))
  end
end

function M.dismiss()
  cancel_pending()
  dismiss("dismissed")
end

--- The suggestion on screen (text, position) or nil; for statuslines and tests.
function M.suggestion()
  return sug and { text = sug.text, row = sug.row, col = sug.col, id = sug.id } or nil
end

-- ---- autocommands, keymaps

local function on_moved()
  if sug and not remaining(sug) then
    dismiss("moved")
  end
  if pending then
    local row, col = cursor()
    if row ~= pending.row or col ~= pending.col then
      cancel_pending()
    end
  end
end

local function on_changed(bufnr)
  if sug then
    local rest = remaining(sug)
    if rest and rest ~= "" then -- typed ahead: show the rest, no new request
      local row, col = cursor()
      set_suggestion(vim.tbl_extend("force", sug, { row = row, col = col, text = rest }))
      return
    elseif rest == "" then
      notify(sug, "codedec/accept", { kind = "typed", chars = vim.fn.strchars(sug.text) })
      clear(sug.bufnr)
      sug = nil
    else
      dismiss("edited")
    end
  end
  schedule_request(bufnr)
end

local function map(bufnr, lhs, action, desc)
  if not lhs then
    return
  end
  vim.keymap.set("i", lhs, function()
    if sug and sug.bufnr == bufnr then
      return "<Cmd>lua require('codedec')." .. action .. "<CR>"
    end
    return lhs -- not remapped (expr maps are noremap): the key's own action
  end, { buffer = bufnr, expr = true, desc = "codedec: " .. desc })
end

local attached = {}

local function attach(bufnr)
  if attached[bufnr] then
    return
  end
  attached[bufnr] = true
  local group = vim.api.nvim_create_augroup("codedec_buf_" .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd("TextChangedI", { group = group, buffer = bufnr, callback = function()
    on_changed(bufnr)
  end })
  vim.api.nvim_create_autocmd("CursorMovedI", { group = group, buffer = bufnr, callback = on_moved })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, buffer = bufnr, callback = function()
    cancel_pending()
    dismiss("escaped")
  end })
  vim.api.nvim_create_autocmd("BufWipeout", { group = group, buffer = bufnr, callback = function()
    attached[bufnr] = nil
  end })
  local keys = M.config.keymaps
  map(bufnr, keys.accept, "accept()", "accept the suggestion")
  map(bufnr, keys.accept_word, "accept('word')", "accept one word of the suggestion")
  map(bufnr, keys.accept_line, "accept('line')", "accept one line of the suggestion")
  map(bufnr, keys.dismiss, "dismiss()", "dismiss the suggestion")
end

local function on_progress(err, result, ctx, config)
  local default = vim.lsp.handlers["$/progress"]
  if default then
    default(err, result, ctx, config)
  end
  local value = result and result.value or {}
  if value.kind == "begin" or value.kind == "report" then
    state.status, state.message = "starting", value.message or value.title
  elseif value.kind == "end" then
    local msg = value.message or ""
    if msg:match("^model ready") then
      state.status, state.message = "idle", msg
    else
      state.status, state.message = "error", msg
    end
  end
end

local function init_options()
  local c = M.config
  local opts = vim.deepcopy(c.settings or {})
  opts.model = c.model or opts.model
  opts.maxTokens = c.max_tokens or opts.maxTokens
  opts.timeBudgetMs = c.time_budget_ms or opts.timeBudgetMs
  opts.decoding = c.decoding or opts.decoding
  opts.lineMode = c.line_mode or opts.lineMode
  return opts
end

--- A crash now: the delay before restarting (ms), or nil when it crashed too often.
local function restart_delay()
  local now = vim.uv.now()
  crashes = vim.tbl_filter(function(t) return now - t < RESTART.window_ms end, crashes)
  table.insert(crashes, now)
  if #crashes > RESTART.max_crashes then
    return nil
  end
  return math.min(RESTART.max_ms, RESTART.base_ms * 2 ^ (#crashes - 1))
end

--- Start the server again for every buffer it served (attached, loaded, enabled filetype).
local function restart_all()
  for bufnr in pairs(attached) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(M.config.filetypes, vim.bo[bufnr].filetype) then
      M.start(bufnr)
    end
  end
end

local stopped_by_us = {} -- client ids stopped by :CodedecRestart (their exit is no crash)

local function on_exit(code, signal, client_id)
  vim.schedule(function()
    cancel_pending()
    if sug then
      clear(sug.bufnr)
    end
    sug = nil
    if (code == 0 and signal == 0) or stopped_by_us[client_id] then
      stopped_by_us[client_id] = nil
      if state.status ~= "starting" then
        state.status, state.message = "stopped", nil
      end
      return
    end
    local why = ("server exited (code %d, signal %d)"):format(code, signal)
    local delay = restart_delay()
    if not delay then
      state.status, state.message = "error", why .. "; it keeps crashing, not restarting (:CodedecRestart)"
      vim.notify("codedec: " .. state.message, vim.log.levels.ERROR)
      return
    end
    state.status, state.message = "error", ("%s; restarting in %d ms"):format(why, delay)
    if #crashes == 1 then
      vim.notify("codedec: the server stopped; restarting it", vim.log.levels.WARN)
    end
    vim.defer_fn(function()
      if state.status == "error" then
        state.status = "stopped" -- M.start shows "starting"
        restart_all()
      end
    end, delay)
  end)
end

--- Start (or reuse) the server for `bufnr` and attach the autocommands and keys.
function M.start(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  if not get_client(bufnr) and state.status == "stopped" then
    state.status, state.message = "starting", "starting the server"
  end
  local id = vim.lsp.start({
    name = "codedec",
    cmd = M.config.cmd,
    root_dir = vim.fs.root(bufnr, { ".git", "pyproject.toml" }) or vim.fn.getcwd(),
    init_options = init_options(),
    handlers = { ["codedec/partial"] = on_partial, ["$/progress"] = on_progress },
    on_exit = on_exit,
  }, { bufnr = bufnr, reuse_client = function(client, conf)
    return client.name == conf.name
  end })
  if id then
    attach(bufnr)
  elseif state.status == "starting" then
    state.status, state.message = "error", "could not start " .. table.concat(M.config.cmd, " ")
  end
  return id
end

--- The state as a table: { status, message, latency_ms, partials, suggestion }.
function M.status()
  return vim.tbl_extend("force", state, { suggestion = M.suggestion() })
end

function M.status_line()
  local s = state.status
  if state.message and (s == "starting" or s == "error") then
    s = s .. ": " .. state.message
  end
  if state.latency_ms then
    s = s .. (" (last %.0f ms, %d partials)"):format(state.latency_ms, state.partials)
  end
  return "codedec: " .. s
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts or {})
  vim.api.nvim_set_hl(0, "CodedecSuggestion", { link = "Comment", default = true })
  local group = vim.api.nvim_create_augroup("codedec", { clear = true })
  vim.api.nvim_create_autocmd("FileType", { group = group, pattern = M.config.filetypes, callback = function(args)
    M.start(args.buf)
  end })
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do -- buffers opened before setup()
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(M.config.filetypes, vim.bo[buf].filetype) then
      M.start(buf)
    end
  end
  vim.api.nvim_create_user_command("CodedecRestart", function()
    crashes = {}
    for _, client in ipairs(vim.lsp.get_clients({ name = "codedec" })) do
      stopped_by_us[client.id] = true
      client:stop(true)
    end
    state.status = "stopped"
    vim.defer_fn(restart_all, 200)
  end, { desc = "codedec: restart the server (forgets earlier crashes)", force = true })
  vim.api.nvim_create_user_command("CodedecStatus", function()
    vim.api.nvim_echo({ { M.status_line() } }, false, {})
  end, { desc = "codedec: server state and last latency", force = true })
end

return M
