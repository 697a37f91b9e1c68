// RESP2 encoding and incremental decoding over hiredis (redisFormatCommandArgv, redisReader). Internal:
// the hiredis types stay in the .cpp, so this header does not need hiredis.
#pragma once

#include "creditguard/redis/connection.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace creditguard::detail {

/// What a RedisScript shares between its copies.
struct RedisScriptData {
    std::string source;
    std::string sha1;
};

/// Appends the RESP encoding of one command (argv[0] is the name) to `out`. Throws std::bad_alloc, or
/// std::length_error for a command hiredis cannot encode (over 2 GiB).
void resp_encode_command(std::span<const std::string_view> argv, std::string& out);

/// Appends `command body numkeys keys... args...` (EVAL / EVALSHA) to `request`.
void redis_push_script(RedisRequest& request, std::string_view command, std::string_view body,
                       std::span<const std::string> keys, std::span<const std::string> args);

/// Incremental RESP2 decoder: feed() bytes as they arrive, then next() until it reports need_more.
/// After a protocol error the decoder stays failed (the connection must be closed).
class RespDecoder {
public:
    enum class Status { value, need_more, error };

    RespDecoder();
    ~RespDecoder();
    RespDecoder(const RespDecoder&) = delete;
    RespDecoder& operator=(const RespDecoder&) = delete;

    void feed(const char* data, std::size_t size);
    /// Takes the next complete reply into `out`.
    Status next(RedisValue& out);
    [[nodiscard]] bool failed() const noexcept;
    /// hiredis' description of the protocol error (about the server's bytes; never holds request data).
    [[nodiscard]] std::string error_message() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace creditguard::detail
