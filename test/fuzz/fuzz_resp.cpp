// Fuzzes the RESP decoder (hiredis' reader building RedisValues) and the command encoder.
// Checks: the replies and the final state do not depend on how the bytes are split into reads; every
// decoded reply, encoded again, decodes to itself; a command split from the input encodes to a RESP
// array that decodes to exactly its arguments.
#include "fuzz_support.hpp"

#include <creditguard/redis/connection.hpp>
#include "redis/redis_resp.hpp"

#include <string>
#include <vector>

using creditguard::RedisRequest;
using creditguard::RedisValue;
using creditguard::detail::RespDecoder;
using Status = RespDecoder::Status;

namespace {

struct Decoded {
    std::vector<RedisValue> values;
    bool failed = false;
};

/// Feeds `bytes` in pieces of the given sizes (cycled), taking every complete reply after each piece.
Decoded decode(std::string_view bytes, const std::vector<std::size_t>& pieces) {
    Decoded out;
    RespDecoder d;
    std::size_t i = 0;
    while (!bytes.empty() && !out.failed) {
        const std::size_t n = std::min(bytes.size(), pieces[i++ % pieces.size()]);
        d.feed(bytes.data(), n);
        bytes.remove_prefix(n);
        RedisValue v;
        for (;;) {
            const Status s = d.next(v);
            if (s == Status::value) {
                out.values.push_back(std::move(v));
                continue;
            }
            if (s == Status::error) {
                out.failed = true;
                FUZZ_CHECK(d.failed());
                FUZZ_CHECK(d.next(v) == Status::error);  // stays failed
            }
            break;
        }
    }
    return out;
}

void encode(const RedisValue& v, std::string& out) {
    switch (v.type()) {
    case RedisValue::Type::nil: out += "$-1\r\n"; return;
    case RedisValue::Type::integer: out += ":" + std::to_string(v.integer()) + "\r\n"; return;
    case RedisValue::Type::simple_string: out += "+" + v.str() + "\r\n"; return;
    case RedisValue::Type::error: out += "-" + v.str() + "\r\n"; return;
    case RedisValue::Type::bulk_string: out += "$" + std::to_string(v.str().size()) + "\r\n" + v.str() + "\r\n"; return;
    case RedisValue::Type::array:
        out += "*" + std::to_string(v.elements().size()) + "\r\n";
        for (const auto& e : v.elements())
            encode(e, out);
        return;
    }
    FUZZ_CHECK(false, "unknown RedisValue type");
}

void exercise(const RedisValue& v) {
    (void)v.to_int();
    (void)v.is_error_with_prefix("NOSCRIPT");
    (void)v.to_display();
    if (v.is_array())
        for (const auto& e : v.elements())
            exercise(e);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input = fuzz::text(data, size);

    // 1. Split-independence: all at once, one byte at a time, and in pieces sized by the input itself.
    const Decoded whole = decode(input, {input.size() + 1});
    std::vector<std::size_t> pieces;
    for (std::size_t i = 0; i < std::min<std::size_t>(size, 16); ++i)
        pieces.push_back(1 + data[i] % 13);
    if (pieces.empty()) pieces.push_back(1);
    for (const auto& split : {decode(input, {1}), decode(input, pieces)}) {
        FUZZ_CHECK(split.failed == whole.failed);
        FUZZ_CHECK(split.values == whole.values);
    }

    // 2. Each reply, encoded again, decodes to itself (and nothing else).
    for (const auto& v : whole.values) {
        exercise(v);
        std::string bytes;
        encode(v, bytes);
        const Decoded again = decode(bytes, {bytes.size()});
        FUZZ_CHECK(!again.failed && again.values.size() == 1 && again.values[0] == v, v.to_display());
    }

    // 3. The input's lines as one command: it encodes to an array of bulk strings, the arguments verbatim.
    std::vector<std::string_view> argv = fuzz::split(input, '\n');
    if (argv.size() > 64) argv.resize(64);
    RedisRequest request;
    request.push_argv(argv);
    const Decoded command = decode(request.payload(), {request.payload().size()});
    FUZZ_CHECK(!command.failed && command.values.size() == 1 && command.values[0].is_array());
    const auto& elements = command.values[0].elements();
    FUZZ_CHECK(elements.size() == argv.size());
    for (std::size_t i = 0; i < argv.size(); ++i)
        FUZZ_CHECK(elements[i].type() == RedisValue::Type::bulk_string && elements[i].str() == argv[i]);
    return 0;
}
