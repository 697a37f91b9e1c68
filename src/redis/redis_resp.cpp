// RESP values, request encoding and decoding over hiredis, redis:// URLs, script SHA1s.
#include "redis_resp.hpp"
#include "creditguard/error.hpp"
#include "creditguard/redis/connection.hpp"

#include <boost/url/parse.hpp>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <limits>
#include <new>
#include <ostream>
#include <stdexcept>

namespace creditguard {

// ---------------------------------------------------------------------------------------------------------
// RedisValue

RedisValue RedisValue::make_integer(std::int64_t v) {
    RedisValue r;
    r.type_ = Type::integer;
    r.int_ = v;
    return r;
}

RedisValue RedisValue::make_simple(std::string s) {
    RedisValue r;
    r.type_ = Type::simple_string;
    r.str_ = std::move(s);
    return r;
}

RedisValue RedisValue::make_bulk(std::string s) {
    RedisValue r;
    r.type_ = Type::bulk_string;
    r.str_ = std::move(s);
    return r;
}

RedisValue RedisValue::make_error(std::string message) {
    RedisValue r;
    r.type_ = Type::error;
    r.str_ = std::move(message);
    return r;
}

RedisValue RedisValue::make_array(std::vector<RedisValue> elements) {
    RedisValue r;
    r.type_ = Type::array;
    r.elements_ = std::move(elements);
    return r;
}

std::int64_t RedisValue::integer() const {
    if (!is_integer()) throw std::logic_error("RedisValue: not an integer: " + to_display());
    return int_;
}

const std::string& RedisValue::str() const {
    if (!is_string() && !is_error()) throw std::logic_error("RedisValue: not a string: " + to_display());
    return str_;
}

const std::vector<RedisValue>& RedisValue::elements() const {
    if (!is_array()) throw std::logic_error("RedisValue: not an array: " + to_display());
    return elements_;
}

std::vector<RedisValue>& RedisValue::elements() {
    if (!is_array()) throw std::logic_error("RedisValue: not an array: " + to_display());
    return elements_;
}

const RedisValue& RedisValue::at(std::size_t i) const {
    return elements().at(i);
}

std::optional<std::int64_t> RedisValue::to_int() const noexcept {
    if (is_integer()) return int_;
    if (!is_string() || str_.empty()) return std::nullopt;
    std::int64_t v = 0;
    const char* first = str_.data();
    const char* last = first + str_.size();
    const auto [end, err] = std::from_chars(first, last, v);
    if (err != std::errc{} || end != last) return std::nullopt;
    return v;
}

bool RedisValue::is_error_with_prefix(std::string_view prefix) const noexcept {
    return is_error() && std::string_view(str_).substr(0, prefix.size()) == prefix;
}

std::string RedisValue::to_display() const {
    switch (type_) {
    case Type::nil: return "nil";
    case Type::integer: return std::to_string(int_);
    case Type::simple_string: return "+" + str_;
    case Type::bulk_string: return "\"" + str_ + "\"";
    case Type::error: return "(error) " + str_;
    case Type::array: {
        std::string out = "[";
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            if (i) out += ", ";
            out += elements_[i].to_display();
        }
        return out + "]";
    }
    }
    return "?";
}

std::ostream& operator<<(std::ostream& os, const RedisValue& v) {
    return os << v.to_display();
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

namespace detail {

void resp_encode_command(std::span<const std::string_view> argv, std::string& out) {
    if (argv.empty()) throw std::invalid_argument("redis: empty command");
    if (argv.size() > static_cast<std::size_t>(INT_MAX)) throw std::length_error("redis: too many arguments");
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (const auto a : argv) {
        ptrs.push_back(a.data() != nullptr ? a.data() : "");
        lens.push_back(a.size());
    }
    char* cmd = nullptr;
    const int len = redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), ptrs.data(), lens.data());
    if (len < 0 || cmd == nullptr) {
        if (cmd) redisFreeCommand(cmd);
        throw std::bad_alloc();
    }
    try {
        out.append(cmd, static_cast<std::size_t>(len));
    } catch (...) {
        redisFreeCommand(cmd);
        throw;
    }
    redisFreeCommand(cmd);
}

}  // namespace detail

RedisRequest& RedisRequest::push_argv(std::span<const std::string_view> argv) {
    detail::resp_encode_command(argv, payload_);
    ++commands_;
    return *this;
}

// ---------------------------------------------------------------------------------------------------------
// Decoding: hiredis builds RedisValues through its object functions. The root is heap-allocated; children
// are appended to their parent's element vector as they arrive (hiredis fills an array in order), so hiredis
// only ever frees roots. A child's address is used by hiredis only while its own children arrive, during
// which its parent's vector does not grow.

namespace detail {
namespace {

/// An array's announced length is not reserved beyond this: "*2000000000\r\n" is 13 bytes, and its
/// elements, which must each arrive (4 bytes at least), grow the vector as they do.
constexpr std::size_t kMaxArrayReserve = 1024;

RedisValue* place(const redisReadTask* task, RedisValue&& v) noexcept {
    try {
        if (task->parent != nullptr) {
            auto& elements = static_cast<RedisValue*>(task->parent->obj)->elements();
            if (static_cast<std::size_t>(task->idx) != elements.size()) return nullptr;  // never: in order
            elements.push_back(std::move(v));
            return &elements.back();
        }
        return new RedisValue(std::move(v));
    } catch (...) {
        return nullptr;  // hiredis reports out of memory
    }
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
    try {
        std::string s(str, len);
        switch (task->type) {
        case REDIS_REPLY_ERROR: return place(task, RedisValue::make_error(std::move(s)));
        case REDIS_REPLY_STATUS: return place(task, RedisValue::make_simple(std::move(s)));
        default: return place(task, RedisValue::make_bulk(std::move(s)));
        }
    } catch (...) {
        return nullptr;
    }
}

void* create_array(const redisReadTask* task, int elements) {
    try {
        std::vector<RedisValue> v;
        v.reserve(std::min(elements > 0 ? static_cast<std::size_t>(elements) : 0, kMaxArrayReserve));
        return place(task, RedisValue::make_array(std::move(v)));
    } catch (...) {
        return nullptr;
    }
}

void* create_integer(const redisReadTask* task, long long value) {
    return place(task, RedisValue::make_integer(static_cast<std::int64_t>(value)));
}

void* create_nil(const redisReadTask* task) {
    return place(task, RedisValue{});
}

void free_object(void* obj) {
    delete static_cast<RedisValue*>(obj);
}

redisReplyObjectFunctions value_functions = {create_string, create_array, create_integer, create_nil, free_object};

}  // namespace

struct RespDecoder::State {
    redisReader* reader = nullptr;
};

RespDecoder::RespDecoder() : state_(std::make_unique<State>()) {
    state_->reader = redisReaderCreateWithFunctions(&value_functions);
    if (state_->reader == nullptr) throw std::bad_alloc();
}

RespDecoder::~RespDecoder() {
    redisReaderFree(state_->reader);
}

void RespDecoder::feed(const char* data, std::size_t size) {
    redisReaderFeed(state_->reader, data, size);
}

RespDecoder::Status RespDecoder::next(RedisValue& out) {
    if (state_->reader->err) return Status::error;
    void* reply = nullptr;
    if (redisReaderGetReply(state_->reader, &reply) != REDIS_OK) return Status::error;
    if (reply == nullptr) return Status::need_more;
    std::unique_ptr<RedisValue> owned(static_cast<RedisValue*>(reply));
    out = std::move(*owned);
    return Status::value;
}

bool RespDecoder::failed() const noexcept {
    return state_->reader->err != 0;
}

std::string RespDecoder::error_message() const {
    return state_->reader->errstr;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// redis:// URLs

boost::system::result<RedisConfig> redis_config_from_url(std::string_view url, RedisConfig base) {
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) return make_error_code(errc::invalid_url);
    const auto& u = *parsed;
    if (u.scheme() != "redis") return make_error_code(errc::invalid_url);
    if (!u.has_authority() || u.has_query() || u.has_fragment()) return make_error_code(errc::invalid_url);
    switch (u.host_type()) {
    case boost::urls::host_type::ipv6: base.host = u.host_ipv6_address().to_string(); break;
    case boost::urls::host_type::name:
    case boost::urls::host_type::ipv4: base.host = u.host(); break;
    default: return make_error_code(errc::invalid_url);
    }
    if (base.host.empty()) return make_error_code(errc::invalid_url);
    if (u.has_port()) {
        const auto port = u.port();
        unsigned long number = 0;
        const auto [end, perr] = std::from_chars(port.data(), port.data() + port.size(), number);
        if (port.empty() || perr != std::errc{} || end != port.data() + port.size() || number == 0 || number > 65535)
            return make_error_code(errc::invalid_url);
        base.port = static_cast<std::uint16_t>(number);
    } else {
        base.port = 6379;
    }
    if (u.has_userinfo()) {
        base.username = u.user();
        if (u.has_password()) base.password = SecretString(u.password());
    }
    const std::string_view path = u.encoded_path();
    if (!path.empty() && path != "/") {
        const std::string_view db = path.substr(1);
        int number = 0;
        const auto [end, perr] = std::from_chars(db.data(), db.data() + db.size(), number);
        if (path[0] != '/' || db.empty() || perr != std::errc{} || end != db.data() + db.size() || number < 0)
            return make_error_code(errc::invalid_url);
        base.database = number;
    }
    return base;
}

// ---------------------------------------------------------------------------------------------------------
// Scripts

namespace {

std::string sha1_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr) != 1 || len != 20)
        throw std::runtime_error("redis: SHA1 failed");
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(40);
    for (unsigned int i = 0; i < len; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 0x0f];
    }
    return out;
}

}  // namespace

void detail::redis_push_script(RedisRequest& request, std::string_view command, std::string_view body,
                               std::span<const std::string> keys, std::span<const std::string> args) {
    std::vector<std::string_view> argv;
    argv.reserve(3 + keys.size() + args.size());
    const std::string numkeys = std::to_string(keys.size());
    argv.push_back(command);
    argv.push_back(body);
    argv.push_back(numkeys);
    for (const auto& k : keys)
        argv.emplace_back(k);
    for (const auto& a : args)
        argv.emplace_back(a);
    request.push_argv(argv);
}

RedisScript::RedisScript(std::string source) {
    auto data = std::make_shared<detail::RedisScriptData>();
    data->sha1 = sha1_hex(source);
    data->source = std::move(source);
    data_ = std::move(data);
}

const std::string& RedisScript::source() const noexcept {
    return data_->source;
}
const std::string& RedisScript::sha1() const noexcept {
    return data_->sha1;
}

void RedisScript::push_evalsha(RedisRequest& request, std::span<const std::string> keys,
                               std::span<const std::string> args) const {
    detail::redis_push_script(request, "EVALSHA", data_->sha1, keys, args);
}

void RedisScript::push_eval(RedisRequest& request, std::span<const std::string> keys,
                            std::span<const std::string> args) const {
    detail::redis_push_script(request, "EVAL", data_->source, keys, args);
}

bool RedisScript::is_noscript(const RedisValue& reply) noexcept {
    return reply.is_error_with_prefix("NOSCRIPT");
}

}  // namespace creditguard
