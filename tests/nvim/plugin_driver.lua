-- Drives the codedec plugin in a headless Neovim like a user would (keys through nvim_input, the
-- main loop running between steps) and writes what it saw to $CODEDEC_TEST_OUT as JSON.
-- Every wait is bounded; a global deadline always writes the file and quits.
local lib = dofile(vim.env.CODEDEC_TEST_LIB)
local result, finish, wait_for, lines, extmark_text = lib.result, lib.finish, lib.wait_for, lib.lines, lib.extmark_text

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

lib.start_ready(function(codedec, client)
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
