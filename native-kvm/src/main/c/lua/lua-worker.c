/*
 * lua-worker: a static Lua 5.4 interpreter (Debian's liblua5.4-dev, linked with glibc
 * -static) running a warm worker written in Lua, a plain Linux program the VMM runs as a
 * Linux guest (docs/linux.md). There are no files in a guest yet, so the script is built
 * in; with an argument, that argument is run as the script instead.
 *
 * The worker builds a table of KEYS entries (its warm state), says so on stderr (the
 * console), then answers one request per line of stdin with one line on stdout:
 *
 *   get K       the value of K (computed at start), or "miss"
 *   set K V     remember V under K: "ok"
 *   count       how many keys the table holds
 *   sum         a checksum of every value (the table's whole state)
 *   exit N      os.exit(N)
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>

static const char *WORKER =
    "local KEYS = 200000\n"
    "local t = {}\n"
    "local function value(k) local x = k for i = 1, 8 do x = (x * 6364136223846793005 + 1442695040888963407) end"
    " return x end\n"
    "for k = 0, KEYS - 1 do t[k] = value(k) end\n"
    "io.stderr:write('lua-worker: ready (' .. KEYS .. ' keys)\\n')\n"
    "for line in io.lines() do\n"
    "  local cmd, a, b = line:match('^(%S+)%s*(%S*)%s*(.*)$')\n"
    "  local reply\n"
    "  if cmd == 'get' then local v = t[tonumber(a)] reply = v and tostring(v) or 'miss'\n"
    "  elseif cmd == 'set' then t[tonumber(a)] = math.tointeger(tonumber(b)) or b reply = 'ok'\n"
    "  elseif cmd == 'count' then local n = 0 for _ in pairs(t) do n = n + 1 end reply = tostring(n)\n"
    "  elseif cmd == 'sum' then local s = 0 for k = 0, KEYS - 1 do local v = t[k] if type(v) == 'number' then"
    " s = s ~ v end end reply = tostring(s)\n"
    "  elseif cmd == 'exit' then io.stdout:flush() os.exit(tonumber(a) or 0)\n"
    "  else reply = 'error: unknown request' end\n"
    "  io.write(reply, '\\n') io.flush()\n"
    "end\n";

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("lua-worker: no memory for a Lua state\n", stderr);
        return 1;
    }
    luaL_openlibs(L);
    int r = argc > 1 ? luaL_dostring(L, argv[1]) : luaL_dostring(L, WORKER);
    if (r != LUA_OK) {
        fprintf(stderr, "lua-worker: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    lua_close(L);
    return 0;
}
