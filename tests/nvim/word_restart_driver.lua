-- Drives the codedec plugin in a headless Neovim (keys through nvim_input): <C-Right> accepts one
-- word of a suggestion at a time; then the server is killed (SIGKILL) and the plugin must restart
-- it and complete again. Writes what it saw to $CODEDEC_TEST_OUT as JSON.
local lib = dofile(vim.env.CODEDEC_TEST_LIB)
local result, finish, wait_for, extmark_text = lib.result, lib.finish, lib.wait_for, lib.extmark_text

local function server_pids()
  local pids = {}
  for _, pid in ipairs(vim.api.nvim_get_proc_children(vim.fn.getpid())) do
    local info = vim.api.nvim_get_proc(pid)
    if info and info.name and info.name:match("python") then table.insert(pids, pid) end
  end
  return pids
end

-- 2. the server dies; the plugin restarts it; typing gets a suggestion from the new server.
local function crash_and_resume(codedec, client)
  local pids = server_pids()
  result.killed = pids
  vim.api.nvim_input("<Esc>")
  for _, pid in ipairs(pids) do vim.uv.kill(pid, "sigkill") end
  wait_for("crash noticed", function() return codedec.status().status == "error" end, 10000, function()
    result.after_crash = codedec.status_line()
    wait_for("new server ready", function()
      local c = vim.lsp.get_clients({ name = "codedec" })[1]
      return c and c.id ~= client.id and c.initialized and codedec.status().status == "idle" and c
    end, 30000, function()
      local c = vim.lsp.get_clients({ name = "codedec" })[1]
      result.new_client = c.id ~= client.id
      result.new_pids = server_pids()
      lib.record_answers(c)
      local n = #result.answers
      result.rewrite = "return a * b" -- after the real round trip to the new server, as above
      vim.api.nvim_input("Go<CR>def mul(a, b):<CR>")
      wait_for("suggestion after restart", function()
        local s, last = codedec.suggestion(), result.answers[#result.answers]
        local m = extmark_text()
        return #result.answers > n and s and last.id == s.id and m and m.text == s.text and s.text ~= ""
      end, 20000, function()
        result.resumed = { text = codedec.suggestion().text, client = result.answers[#result.answers].client }
        finish(nil)
      end)
    end)
  end)
end

lib.start_ready(function(codedec, client)
  -- 1. accept word by word.
  result.rewrite = "return a_1 - b\nprint(sub(2, 1))"
  vim.api.nvim_input("Godef sub(a, b):<CR>")
  wait_for("suggestion shown", function()
    local s, last = codedec.suggestion(), result.answers[#result.answers]
    return s and last and last.id == s.id and s.text == last.text
  end, 20000, function()
    result.words = { { line = vim.api.nvim_get_current_line(), shown = codedec.suggestion().text } }
    local function step(k)
      vim.api.nvim_input("<C-Right>")
      wait_for("word " .. k, function()
        local s = codedec.suggestion()
        return s and s.text ~= result.words[#result.words].shown
      end, 5000, function()
        local m = extmark_text()
        table.insert(result.words, { line = vim.api.nvim_get_current_line(), shown = codedec.suggestion().text,
          extmark = m and m.text, cursor = vim.api.nvim_win_get_cursor(0) })
        if k < 3 then step(k + 1) else crash_and_resume(codedec, client) end
      end)
    end
    step(1)
  end)
end)
