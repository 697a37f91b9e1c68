// The generic provider adapter (balance, create task, task status); the presets are in presets.cpp.
#include "creditguard/providers/provider.hpp"
#include "parsed_body.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>

#include <atomic>
#include <stdexcept>

namespace creditguard {

namespace asio = boost::asio;
namespace json = boost::json;
using boost::system::error_code;

namespace {

std::string percent_encode(std::string_view s) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

/// Writes `v` at a JSON pointer, creating objects on the way. Returns false if the path crosses a non-object.
bool set_at(json::value& root, std::string_view pointer, json::value v) {
    if (pointer.empty()) {
        root = std::move(v);
        return true;
    }
    if (pointer.front() != '/') return false;
    json::value* cur = &root;
    while (!pointer.empty()) {
        pointer.remove_prefix(1);
        const auto next = pointer.find('/');
        std::string token(pointer.substr(0, next));
        pointer = next == std::string_view::npos ? std::string_view{} : pointer.substr(next);
        for (std::size_t p = 0; (p = token.find('~', p)) != std::string::npos; ++p) {
            if (p + 1 < token.size() && token[p + 1] == '1')
                token.replace(p, 2, "/");
            else if (p + 1 < token.size() && token[p + 1] == '0')
                token.replace(p, 2, "~");
        }
        if (cur->is_null()) *cur = json::object{};
        if (!cur->is_object()) return false;
        cur = &cur->as_object()[token];
    }
    *cur = std::move(v);
    return true;
}

const json::value* at(const json::value& doc, const std::string& pointer) {
    if (pointer.empty()) return nullptr;
    error_code ec;
    const json::value* v = doc.find_pointer(pointer, ec);
    return (v && !v->is_null()) ? v : nullptr;
}

template <class T>
void complete(Provider::Handler<T>& h, const asio::any_io_executor& fallback, error_code ec, T value) {
    auto ex = asio::get_associated_executor(h, fallback);
    asio::dispatch(ex, [h = std::move(h), ec, v = std::move(value)]() mutable { std::move(h)(ec, std::move(v)); });
}

/// For errors found while initiating: always posted, never run inside the initiating call (a
/// use_awaitable handler completed inline recurses).
template <class T>
void complete_later(Provider::Handler<T>& h, const asio::any_io_executor& fallback, error_code ec, T value) {
    // Posted to the client's executor first (the handler's type-erased executor cannot be required not
    // to block), then dispatched to the handler's own executor from there.
    asio::post(fallback, [h = std::move(h), fallback, ec, v = std::move(value)]() mutable {
        complete(h, fallback, ec, std::move(v));
    });
}

/// A transport failure: the classification says there was no answer.
Classification no_answer() {
    Classification c;
    c.outcome = Outcome::malformed;
    c.http_status = 0;
    return c;
}

}  // namespace

struct Provider::State {
    ProviderConfig config;
    SecretString key;
    mutable HttpClient http;
    SecretString auth_value;  // "Bearer KEY" or KEY, built once

    State(ProviderConfig c, SecretString k, HttpClient h)
        : config(std::move(c)),
          key(std::move(k)),
          http(std::move(h)),
          auth_value(config.auth_style == AuthStyle::bearer ? SecretString("Bearer " + key.reveal()) : key) {}

    HttpRequest request(HttpMethod method, const std::string& path_and_query, std::string body = {}) const {
        HttpRequest r;
        r.method = method;
        r.url = config.base_url + path_and_query;
        r.headers.emplace_back("Accept", "application/json");
        if (method == HttpMethod::post) r.headers.emplace_back("Content-Type", "application/json");
        if (config.auth_style != AuthStyle::none)
            r.secret_headers.emplace_back(config.auth_style == AuthStyle::bearer ? "Authorization" : config.auth_header,
                                          auth_value);
        r.body = std::move(body);
        return r;
    }

    Classification classify(const HttpResponse& resp) const { return classify(resp, detail::parse_body(resp.body)); }

    /// What every call's completion does first: a transport error completes with "no answer"; otherwise
    /// the body is parsed once and classified, and an answer that is not ok completes with its error
    /// (with `unreadable_is_ambiguous`, an unreadable answer, or a gateway's 502/504 page, is
    /// errc::ambiguous_outcome: a create whose reply cannot be read, or whose reply a gateway lost after
    /// passing the request on, may still have made a task). Returns the parsed body when the caller goes on.
    template <class Reply>
    std::optional<detail::ParsedBody> answer(error_code ec, const HttpResponse& resp, Reply& r,
                                             Provider::Handler<Reply>& h, bool unreadable_is_ambiguous = false) const {
        const auto ex = http.get_executor();
        if (ec && ec != errc::redirect_not_followed) {
            r.cls = no_answer();
            complete(h, ex, ec, std::move(r));
            return std::nullopt;
        }
        detail::ParsedBody body = detail::parse_body(resp.body);
        r.cls = classify(resp, body);
        error_code result = ec;
        const bool gateway_lost_reply = resp.status == 502 || resp.status == 504;
        if (!result && unreadable_is_ambiguous && (r.cls.outcome == Outcome::malformed || gateway_lost_reply))
            result = errc::ambiguous_outcome;
        if (!result && r.cls.outcome != Outcome::ok) result = to_error_code(r.cls.outcome);
        if (result) {
            complete(h, ex, result, std::move(r));
            return std::nullopt;
        }
        return body;
    }

    Classification classify(const HttpResponse& resp, const detail::ParsedBody& body) const {
        Classification c = detail::classify_parsed(config, resp.status, resp, body, std::chrono::system_clock::now());
        c.message = redact(std::move(c.message), key);
        return c;
    }
};

Provider::Provider(HttpClient http, ProviderConfig config, SecretString api_key) {
    const auto fail = [&](const std::string& what) {
        throw std::invalid_argument("creditguard: provider '" + config.id + "': " + what);
    };
    config.base_url = detail::trim_slash(config.base_url);
    auto u = boost::urls::parse_uri(config.base_url);
    if (!u || (u->scheme() != "http" && u->scheme() != "https") || !u->has_authority())
        fail("base_url must be an absolute http:// or https:// URL");
    if (config.balance_path.empty() || config.balance_path.front() != '/') fail("balance_path must start with '/'");
    if (config.auth_style == AuthStyle::header && config.auth_header.empty()) fail("auth_header is empty");
    if (api_key.empty() && config.auth_style != AuthStyle::none) fail("the API key is empty");
    state_ = std::make_shared<const State>(State{std::move(config), std::move(api_key), std::move(http)});
}

const ProviderConfig& Provider::config() const noexcept {
    return state_->config;
}
HttpClient& Provider::http() const noexcept {
    return state_->http;
}
Classification Provider::classify(const HttpResponse& response) const {
    return state_->classify(response);
}

json::value Provider::make_create_body(std::string_view prompt) const {
    json::value body = state_->config.create_template;
    if (!body.is_object()) body = json::object{};
    set_at(body, state_->config.prompt_pointer, json::string(prompt));
    return body;
}

void Provider::start_balance(std::shared_ptr<const State> s, Handler<BalanceReply> h) {
    HttpRequest req = s->request(HttpMethod::get, s->config.balance_path);
    auto& http = s->http;
    http.async_request(std::move(req), [s, h = std::move(h)](error_code ec, HttpResponse resp) mutable {
        BalanceReply r;
        const auto body = s->answer(ec, resp, r, h);
        if (!body) return;
        const auto ex = s->http.get_executor();
        auto b = detail::balance_in(s->config, *body);
        if (!b) {
            r.cls.outcome = Outcome::malformed;
            return complete(h, ex, b.error(), std::move(r));
        }
        r.balance = *b;
        complete(h, ex, error_code{}, std::move(r));
    });
}

void Provider::start_create(std::shared_ptr<const State> s, json::value body, Handler<TaskCreated> h) {
    if (s->config.create_path.empty()) {
        TaskCreated r;
        r.cls = no_answer();
        return complete_later(h, s->http.get_executor(), error_code(errc::invalid_request), std::move(r));
    }
    HttpRequest req = s->request(HttpMethod::post, s->config.create_path, json::serialize(body));
    auto& http = s->http;
    http.async_request(std::move(req), [s, h = std::move(h)](error_code ec, HttpResponse resp) mutable {
        TaskCreated r;
        const auto body = s->answer(ec, resp, r, h, /*unreadable_is_ambiguous=*/true);
        if (!body) return;
        const auto ex = s->http.get_executor();
        const json::value& doc = body->doc;
        for (const auto& p : s->config.task_id_pointers) {
            if (!body->ok) break;
            const json::value* v = at(doc, p);
            if (v && v->is_string() && !v->get_string().empty()) {
                r.task_id = std::string(v->get_string());
                break;
            }
            if (v && v->is_int64()) {
                r.task_id = std::to_string(v->get_int64());
                break;
            }
        }
        if (r.task_id.empty()) {
            r.cls.outcome = Outcome::malformed;
            return complete(h, ex, error_code(errc::ambiguous_outcome), std::move(r));
        }
        complete(h, ex, error_code{}, std::move(r));
    });
}

void Provider::start_estimate(std::shared_ptr<const State> s, json::value body, Handler<CostEstimate> h) {
    if (s->config.estimate_path.empty()) {
        CostEstimate r;
        r.cls = no_answer();
        return complete_later(h, s->http.get_executor(), error_code(errc::not_found), std::move(r));
    }
    HttpRequest req = s->request(HttpMethod::post, s->config.estimate_path, json::serialize(body));
    auto& http = s->http;
    http.async_request(std::move(req), [s, h = std::move(h)](error_code ec, HttpResponse resp) mutable {
        CostEstimate r;
        const auto body = s->answer(ec, resp, r, h);
        if (!body) return;
        const json::value* v = body->ok ? at(body->doc, s->config.estimate_pointer) : nullptr;
        const auto credits = v ? balance_from_json(*v) : boost::system::result<Credits>(errc::malformed_response);
        if (!credits || *credits < 0) {
            r.cls.outcome = Outcome::malformed;
            return complete(h, s->http.get_executor(), error_code(errc::malformed_response), std::move(r));
        }
        r.credits = *credits;
        complete(h, s->http.get_executor(), error_code{}, std::move(r));
    });
}

void Provider::start_status(std::shared_ptr<const State> s, std::string id, Handler<TaskStatus> h) {
    if (s->config.status_path.empty() || id.empty()) {
        TaskStatus r;
        r.cls = no_answer();
        return complete_later(h, s->http.get_executor(), error_code(errc::invalid_request), std::move(r));
    }
    HttpRequest req =
        s->request(HttpMethod::get, s->config.status_path + "?" + s->config.status_query + "=" + percent_encode(id));
    auto& http = s->http;
    http.async_request(std::move(req), [s, h = std::move(h)](error_code ec, HttpResponse resp) mutable {
        TaskStatus r;
        const auto body = s->answer(ec, resp, r, h);
        if (!body) return;
        const auto ex = s->http.get_executor();
        const json::value& doc = body->doc;
        const json::value* st = body->ok ? at(doc, s->config.status_pointer) : nullptr;
        if (!st || !st->is_string()) {
            r.cls.outcome = Outcome::malformed;
            return complete(h, ex, error_code(errc::malformed_response), std::move(r));
        }
        r.raw_status = std::string(st->get_string());
        for (const auto& rule : s->config.statuses)
            if (rule.value == r.raw_status) r.state = rule.state;
        if (const json::value* c = at(doc, s->config.actual_credits_pointer)) {
            auto credits = balance_from_json(*c);
            if (!credits) {
                r.cls.outcome = Outcome::malformed;
                return complete(h, ex, credits.error(), std::move(r));
            }
            r.actual_credits = *credits;
        }
        if (const json::value* f = at(doc, s->config.fail_reason_pointer); f && f->is_string())
            r.fail_reason = redact(std::string(f->get_string().subview(0, 256)), s->key);
        complete(h, ex, error_code{}, std::move(r));
    });
}

namespace {

class ProviderBalanceSource final : public BalanceSource {
public:
    explicit ProviderBalanceSource(Provider p) : provider_(std::move(p)) {}

    void read_balance(BalanceCallback done) override {
        provider_.async_balance(
            [done = std::move(done)](error_code ec, BalanceReply r) { done(ec, ec ? Credits{0} : r.balance); });
    }

    void cancel() override { provider_.http().cancel(); }

private:
    Provider provider_;
};

// A balance source that takes a permit from the account's request budget before each read. A read answered
// "rate limited" is asked again (the budget has paused by then) a few times before the guard hears of it:
// the guard's own pause would stop admissions for an answer the budget already handles.
class PacedBalanceSource final : public BalanceSource, public std::enable_shared_from_this<PacedBalanceSource> {
public:
    PacedBalanceSource(Provider p, std::shared_ptr<RequestBudget> budget)
        : provider_(std::move(p)), budget_(std::move(budget)) {}

    void read_balance(BalanceCallback done) override {
        cancelled_ = false;
        attempt(std::move(done), 1);
    }

    void cancel() override {
        cancelled_ = true;  // a read still waiting for its permit ends when it gets one
        provider_.http().cancel();
    }

private:
    static constexpr int max_attempts = 8;  // the budget's pauses double in between

    void attempt(BalanceCallback done, int n) {
        budget_->async_acquire(RequestKind::balance, [self = shared_from_this(), done = std::move(done), n](
                                                         error_code ec, RequestPermit permit) mutable {
            if (!ec && self->cancelled_) ec = errc::cancelled;
            if (ec) return done(ec, Credits{0});
            auto& provider = self->provider_;
            provider.async_balance([self = std::move(self), done = std::move(done), n, permit = std::move(permit)](
                                       error_code ec, BalanceReply r) mutable {
                self->budget_->report(permit, request_answer(r.cls));
                if (ec == errc::rate_limited && n < max_attempts && !self->cancelled_)
                    return self->attempt(std::move(done), n + 1);
                done(ec, ec ? Credits{0} : r.balance);
            });
        });
    }

    Provider provider_;
    std::shared_ptr<RequestBudget> budget_;
    std::atomic<bool> cancelled_{false};
};

}  // namespace

std::shared_ptr<BalanceSource> Provider::balance_source() const {
    Provider own(HttpClient(state_->http.get_executor(), state_->http.config()), state_->config, state_->key);
    return std::make_shared<ProviderBalanceSource>(std::move(own));
}

std::shared_ptr<BalanceSource> Provider::balance_source(std::shared_ptr<RequestBudget> budget) const {
    if (!budget) return balance_source();
    Provider own(HttpClient(state_->http.get_executor(), state_->http.config()), state_->config, state_->key);
    return std::make_shared<PacedBalanceSource>(std::move(own), std::move(budget));
}

}  // namespace creditguard
