-- Drives the codedec plugin in a headless Neovim like a user would (keys through nvim_input, the
-- main loop running between steps) and writes what it saw to $CODEDEC_TEST_OUT as JSON.
-- Every wait is bounded; a global deadline always writes the file and quits.
local out = vim.env.CODEDEC_TEST_OUT
local result = { steps = {} }
local done = false

local function finish(err)
  if done then return end
  done = true
  result.error = err
  result.status = require("codedec").status_line()
  vim.fn.writefile({ vim.json.encode(result) }, out)
  vim.defer_fn(function() vim.cmd("qa!") end, 200) -- let the accept notification leave
end

vim.defer_fn(function() finish("deadline: stuck at step " .. #result.steps) end, tonumber(vim.env.CODEDEC_TEST_DEADLINE_MS))

-- wait_for(cond, ms, then_fn): poll cond every 20 ms on the main loop.
local function wait_for(what, cond, ms, then_fn)
  local t0 = vim.uv.now()
  local function poll()
    if done then return end
    local ok, v = pcall(cond)
    if not ok then return finish(what .. ": " .. tostring(v)) end
    if v then
      table.insert(result.steps, what)
      local ok2, err = pcall(then_fn)
      if not ok2 then finish(what .. ": " .. tostring(err)) end
    elseif vim.uv.now() - t0 > ms then
      finish("timed out waiting for: " .. what)
    else
      vim.defer_fn(poll, 20)
    end
  end
  poll()
end

local function lines() return vim.api.nvim_buf_get_lines(0, 0, -1, false) end

local function extmark_text()
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

-- 4. a multi-line suggestion: <C-l> accepts one line and keeps the rest; <Esc> dismisses the rest.
local function accept_line()
  local codedec = require("codedec")
  local n = #result.answers
  result.rewrite = "return a - b\n\nprint(sub(2, 1))"
  vim.api.nvim_input("<Esc>Go<CR>def sub(a, b):<CR>")
  wait_for("multi-line suggestion", function()
    local s, last = codedec.suggestion(), result.answers[#result.answers]
    return #result.answers > n and s and last.id == s.id and s.text == last.text and s.text:find("\n")
  end, 20000, function()
    local s = codedec.suggestion()
    local info = { id = s.id, text = s.text }
    result.accept_line = info
    info.accepted = s.text:match("^%s*[^\n]*")
    info.rest = s.text:sub(#info.accepted + 1)
    vim.api.nvim_input("<C-l>")
    wait_for("line accepted", function()
      local now = codedec.suggestion()
      return now and now.text ~= info.text
    end, 5000, function()
      info.rest_shown = codedec.suggestion().text
      info.extmark = extmark_text()
      info.buffer_line = vim.api.nvim_get_current_line()
      vim.api.nvim_input("<Esc>")
      wait_for("escaped", function() return vim.api.nvim_get_mode().mode == "n" end, 5000, function()
        info.after_escape = codedec.suggestion()
        info.extmark_after_escape = extmark_text()
        finish(nil)
      end)
    end)
  end)
end

local ok, err = pcall(function()
  vim.opt.runtimepath:prepend(vim.env.CODEDEC_TEST_PLUGIN)
  local codedec = require("codedec")
  codedec.setup({
    cmd = vim.json.decode(vim.env.CODEDEC_TEST_CMD),
    model = "tiny-random",
    max_tokens = 24,
    debounce_ms = 30,
    settings = vim.json.decode(vim.env.CODEDEC_TEST_SETTINGS),
  })
  vim.cmd("edit " .. vim.fn.fnameescape(vim.env.CODEDEC_TEST_FILE))
  local client
  -- Record every final inlineCompletion answer, independently of the plugin's own bookkeeping.
  result.answers = {}
  wait_for("client started", function()
    client = vim.lsp.get_clients({ name = "codedec" })[1]
    return client ~= nil
  end, 10000, function()
    local orig = client.request
    client.request = function(self, method, params, handler, bufnr)
      local id
      local ok, rid = orig(self, method, params, function(e, res, ctx, cfg)
        if method == "textDocument/inlineCompletion" and not e then
          local item = res and res.items and res.items[1]
          if item and result.rewrite then -- the random model hardly ever emits a line break
            item.insertText = result.rewrite
          end
          table.insert(result.answers, { id = id, text = item and item.insertText or "" })
        end
        return handler(e, res, ctx, cfg)
      end, bufnr)
      id = rid
      return ok, rid
    end
    wait_for("model ready", function() return codedec.status().status == "idle" end, 30000, function()
      result.filetype = vim.bo.filetype
      -- 1. <Tab> with no suggestion on screen: the key's normal action (python ftplugin: 4 spaces).
      vim.api.nvim_input("Go<Tab>")
      wait_for("tab inserted", function() return vim.fn.line("$") == 2 and lines()[2] ~= "" end, 5000, function()
        result.after_tab = lines()[2]
        vim.api.nvim_input("<Esc>")
        -- 2. type a function header and a body start; wait for the ghost text.
        vim.api.nvim_input(":2d<CR>Godef add(a, b):<CR>return a")
        wait_for("suggestion shown", function()
          local m = extmark_text()
          local last = result.answers[#result.answers]
          local s = codedec.suggestion()
          return m and s and last and last.id == s.id and m.text == s.text and m.text ~= ""
        end, 20000, function()
          result.extmark = extmark_text()
          result.answer = result.answers[#result.answers]
          result.before_accept = lines()
          result.cursor = vim.api.nvim_win_get_cursor(0)
          result.partials = codedec.status().partials
          -- 3. accept with <Tab>
          vim.api.nvim_input("<Tab>")
          wait_for("accepted", function() return codedec.suggestion() == nil and #lines() >= 3 and lines()[3] ~= result.before_accept[3] end, 5000, function()
            vim.defer_fn(function()
              result.after_accept = lines()
              result.after_cursor = vim.api.nvim_win_get_cursor(0)
              result.mode = vim.api.nvim_get_mode().mode
              vim.cmd("CodedecStatus")
              accept_line()
            end, 50)
          end)
        end)
      end)
    end)
  end)
end)
if not ok then finish(tostring(err)) end
