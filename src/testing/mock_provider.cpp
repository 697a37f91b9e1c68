// The mock provider: a small Beast server that imitates sunoapi.org, kie.ai, udioapi.pro and crun.ai, the
// balance endpoints of sunor.cc, musicapi.ai and sunoapi.com, and a self-hosted gcui-art/suno-api.
#include "creditguard/testing/mock_provider.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>

namespace creditguard {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

enum class Flavor { sunoapi, kie, udioapi, crun, sunorcc, credits_split, gcui };
enum class Endpoint { balance, create, status, estimate, unknown };
enum class TaskPhase { pending, running, success, failed };

struct Task {
    std::string id;
    Flavor flavor = Flavor::sunoapi;
    int polls = 0;
    bool will_fail = false;
    bool charged = false;
    Credits charged_amount = 0;
    TaskPhase phase = TaskPhase::pending;
    std::string fail_reason;
};

bool in_flight(const Task& t) {
    return t.phase == TaskPhase::pending || t.phase == TaskPhase::running;
}

bool matches(MockEndpoint which, Endpoint e) {
    switch (which) {
    case MockEndpoint::any: return true;
    case MockEndpoint::balance: return e == Endpoint::balance;
    case MockEndpoint::create: return e == Endpoint::create;
    case MockEndpoint::status: return e == Endpoint::status;
    }
    return false;
}

/// The job a create body belongs to: "creditguard job N" (what `creditguard run` puts in every prompt)
/// when present, so that a resend with other fields changed still counts as the same job; else the body.
std::string job_key(std::string_view raw_body, const json::value& parsed) {
    static constexpr std::string_view marker = "creditguard job ";
    if (const auto at = raw_body.find(marker); at != std::string_view::npos) {
        auto end = at + marker.size();
        while (end < raw_body.size() && raw_body[end] >= '0' && raw_body[end] <= '9')
            ++end;
        if (end > at + marker.size()) return std::string(raw_body.substr(at, end - at));
    }
    return json::serialize(parsed);
}

/// splitmix64: a small generator whose sequence is the same on every platform and standard library.
struct SplitMix {
    std::uint64_t state = 0;
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

/// What the random fault mode drew for one request.
enum class RandomFault {
    none,
    reset_before,
    reset_after,
    delay_after,
    gateway_after,
    server_error,
    malformed,
    truncated,
    rate_burst,
    maintenance_burst,
};

struct Pick {
    RandomFault fault = RandomFault::none;
    double param = 0;  // picks the variant (status, burst length, Retry-After)
};

const char* msg_key(Flavor f) {
    return (f == Flavor::sunoapi || f == Flavor::kie) ? "msg" : "message";
}
int insufficient_code(Flavor f) {
    return f == Flavor::sunoapi ? 429 : 402;
}
int rate_code(Flavor f) {
    return f == Flavor::sunoapi ? 430 : 429;
}
int maintenance_code(Flavor f) {
    return f == Flavor::udioapi ? 503 : 455;
}

using Response = http::response<http::string_body>;

/// What the session does with one request.
struct Action {
    enum Kind { respond, reset, truncate } kind = respond;
    Response response;
    std::chrono::milliseconds delay{0};
    bool processed = false;  // reached the provider logic (faults after processing may apply)
};

struct SessionHandle {
    beast::tcp_stream* lowest = nullptr;
    asio::steady_timer* timer = nullptr;
    bool idle = true;                                      // waiting for the next request
    bool writing = false;                                  // writing an answer; the peer may already have it
    std::vector<std::shared_ptr<void>> close_after_write;  // close_idle_connections() barriers
};

}  // namespace

struct MockProvider::Impl : std::enable_shared_from_this<MockProvider::Impl> {
    Impl(asio::any_io_executor ex, MockConfig cfg)
        : strand(asio::make_strand(ex)), acceptor(strand), config(std::move(cfg)), rng(config.seed) {
        if (!config.tls_cert_file.empty() && !config.tls_key_file.empty()) {
            tls.emplace(ssl::context::tls_server);
            tls->use_certificate_chain_file(config.tls_cert_file);
            tls->use_private_key_file(config.tls_key_file, ssl::context::pem);
        }
        const tcp::endpoint ep(asio::ip::make_address(config.address), config.port);
        acceptor.open(ep.protocol());
        acceptor.set_option(tcp::acceptor::reuse_address(true));
        acceptor.bind(ep);
        acceptor.listen();
        port = acceptor.local_endpoint().port();
        credits = config.credits;
        if (!clock) clock = steady_clock();
        foreign_last = clock->now();
        books.starting_balance = books.lowest_balance = books.lowest_balance_own = credits;
    }

    // ---- the account (under the mutex) ----

    void note_balance() {
        books.lowest_balance = std::min(books.lowest_balance, credits);
        books.lowest_balance_own = std::min(books.lowest_balance_own, credits + books.foreign_spent);
    }

    void charge(Credits amount) {
        credits -= amount;
        used += amount;
        books.charged += amount;
        if (credits < 0) {
            ++books.overdrawing_charges;
            books.overspent += std::min(amount, -credits);
        }
        note_balance();
    }

    void give_back(Credits amount) {
        credits += amount;
        used -= amount;
        books.refunded += amount;
    }

    /// Applies what happened with time since the last call: the foreign spender's share and the tasks that
    /// finish on their own.
    void advance_time() {
        const TimePoint now = clock->now();
        if (foreign_rate > 0 && now > foreign_last) {
            foreign_acc += foreign_rate * std::chrono::duration<double>(now - foreign_last).count();
            const double whole = std::floor(foreign_acc);
            foreign_acc -= whole;
            // The foreign client's own creates would be refused once the account is empty.
            const Credits take = std::min(static_cast<Credits>(std::min(whole, 1e15)), std::max<Credits>(credits, 0));
            credits -= take;
            books.foreign_spent += take;
            note_balance();
        }
        foreign_last = std::max(foreign_last, now);
        if (config.finish_unpolled_after) {
            while (!unpolled.empty() && unpolled.front().first + *config.finish_unpolled_after <= now) {
                auto it = tasks.find(unpolled.front().second);
                unpolled.pop_front();
                if (it != tasks.end() && in_flight(it->second)) {
                    finish(it->second);
                    ++books.tasks_finished_unpolled;
                }
            }
        }
    }

    void finish_all() {
        for (auto& [id, t] : tasks) {
            if (!in_flight(t)) continue;
            finish(t);
            ++books.tasks_finished_unpolled;
        }
        unpolled.clear();
    }

    MockBooks current_books() const {
        MockBooks b = books;
        b.balance = credits;
        b.tasks_created = counters.tasks_created;
        for (const auto& [id, t] : tasks)
            b.tasks_in_flight += in_flight(t);
        b.distinct_jobs = tasks_per_job.size();
        for (const auto& [key, n] : tasks_per_job) {
            b.max_tasks_per_job = std::max(b.max_tasks_per_job, n);
            if (n > 1) b.duplicated_jobs.emplace_back(key, n);
        }
        return b;
    }

    Pick draw() {
        Pick p;
        if (!random_on) return p;
        // Always three draws per request, so the sequence depends only on the number of requests.
        const double u = rng_faults.uniform();
        p.param = rng_faults.uniform();
        const double t = rng_faults.uniform();
        const std::pair<double, RandomFault> table[] = {
            {random.reset_before_processing, RandomFault::reset_before},
            {random.reset_after_processing, RandomFault::reset_after},
            {random.delay_after_processing, RandomFault::delay_after},
            {random.gateway_error_after_processing, RandomFault::gateway_after},
            {random.server_error, RandomFault::server_error},
            {random.malformed, RandomFault::malformed},
            {random.truncated, RandomFault::truncated},
            {random.rate_limit_burst, RandomFault::rate_burst},
            {random.maintenance_burst, RandomFault::maintenance_burst},
        };
        double acc = 0;
        for (const auto& [prob, fault] : table) {
            acc += std::max(prob, 0.0);
            if (u < acc) {
                p.fault = fault;
                break;
            }
        }
        if (t < random.top_up && random.top_up_amount > 0) {
            credits += random.top_up_amount;
            books.topped_up += random.top_up_amount;
            ++counters.top_ups;
        }
        return p;
    }

    // ---- request handling (under the mutex) ----

    Response make(unsigned status, std::string body, const http::request<http::string_body>& req,
                  std::string_view content_type = "application/json") const {
        Response res{static_cast<http::status>(status), req.version()};
        res.result(status);
        res.reason(status == 200 ? "OK" : "Error");
        res.set(http::field::server, "creditguard-mock");
        res.set(http::field::content_type, content_type);
        res.body() = std::move(body);
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        return res;
    }

    Response error(Flavor f, int code, std::string_view message, const http::request<http::string_body>& req) const {
        if (f == Flavor::gcui)  // an HTTP status and {"error": text}, whatever the error style
            return make(static_cast<unsigned>(code), json::serialize(json::object{{"error", message}}), req);
        json::object body;
        if (style != ErrorStyle::status_only) body["code"] = code;
        body[msg_key(f)] = message;
        if (style != ErrorStyle::status_only) body["data"] = nullptr;
        return make(style == ErrorStyle::body_code ? 200u : static_cast<unsigned>(code), json::serialize(body), req);
    }

    Response ok(Flavor f, json::object extra, const http::request<http::string_body>& req) const {
        json::object body;
        body["code"] = 200;
        body[msg_key(f)] = "success";
        for (auto& kv : extra)
            body[kv.key()] = std::move(kv.value());
        return make(200, json::serialize(body), req);
    }

    static bool route(std::string_view path, const std::string& v1, Flavor& f, Endpoint& e) {
        const Flavor v1f = v1 == "kie" ? Flavor::kie : Flavor::sunoapi;
        struct Row {
            std::string_view path;
            int flavor;  // -1: v1 flavor
            Endpoint e;
        };
        static constexpr Row rows[] = {
            {"/api/v1/generate/credit", static_cast<int>(Flavor::sunoapi), Endpoint::balance},
            {"/api/v1/chat/credit", static_cast<int>(Flavor::kie), Endpoint::balance},
            {"/api/v1/generate", -1, Endpoint::create},
            {"/api/v1/generate/record-info", -1, Endpoint::status},
            {"/api/v2/credits", static_cast<int>(Flavor::udioapi), Endpoint::balance},
            {"/api/v2/generate", static_cast<int>(Flavor::udioapi), Endpoint::create},
            {"/api/v2/feed", static_cast<int>(Flavor::udioapi), Endpoint::status},
            {"/api/v1/client/account/balance", static_cast<int>(Flavor::crun), Endpoint::balance},
            {"/api/v1/client/job/CreateTask", static_cast<int>(Flavor::crun), Endpoint::create},
            {"/api/v1/client/job/TaskInfo", static_cast<int>(Flavor::crun), Endpoint::status},
            {"/api/v1/client/job/estimate-credits", static_cast<int>(Flavor::crun), Endpoint::estimate},
            {"/api/v1/account/balance", static_cast<int>(Flavor::sunorcc), Endpoint::balance},
            {"/api/v1/get-credits", static_cast<int>(Flavor::credits_split), Endpoint::balance},
            {"/api/get_limit", static_cast<int>(Flavor::gcui), Endpoint::balance},
            {"/api/generate", static_cast<int>(Flavor::gcui), Endpoint::create},
            {"/api/get", static_cast<int>(Flavor::gcui), Endpoint::status},
        };
        for (const auto& r : rows) {
            if (r.path == path) {
                f = r.flavor < 0 ? v1f : static_cast<Flavor>(r.flavor);
                e = r.e;
                return true;
            }
        }
        f = v1f;
        e = Endpoint::unknown;
        return false;
    }

    bool authorized(Flavor f, const http::request<http::string_body>& req) const {
        if (f == Flavor::gcui) return true;  // self-hosted: it holds the session, requests carry no key
        if (f == Flavor::crun || f == Flavor::sunorcc) {
            auto it = req.find("x-api-key");
            return it != req.end() && key.equals(it->value());
        }
        auto it = req.find(http::field::authorization);
        if (it == req.end()) return false;
        std::string_view v = it->value();
        if (v.substr(0, 7) != "Bearer ") return false;
        return key.equals(v.substr(7));
    }

    Response gateway_page(unsigned status, const http::request<http::string_body>& req) const {
        const std::string title = std::to_string(status) + (status == 504 ? " Gateway Time-out" : " Bad Gateway");
        return make(status,
                    "<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<center><h1>" + title +
                        "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                    req, "text/html");
    }

    Response truncated_answer(const http::request<http::string_body>& req) const {
        return make(200, "{\"code\":200,\"msg\":\"success\",\"data\":{\"balance\":1000,\"padding\":\"xxxxxxxx\"}}",
                    req);
    }

    Response malformed_answer(const http::request<http::string_body>& req) const {
        return make(200, "{\"code\":200,\"msg\":\"success\",\"data\":{\"credits\":12", req);
    }

    /// GET /__mock/books, POST /__mock/finish-tasks: for scripts on this machine only.
    Action control(std::string_view path, bool loopback_peer, const http::request<http::string_body>& req) {
        Action a;
        if (!loopback_peer) {
            a.response = make(403, "{\"error\":\"the control endpoints answer loopback peers only\"}", req);
            return a;
        }
        advance_time();
        const auto report = [&] {
            return "{\"books\":" + books_to_json(current_books()) + ",\"counters\":" + counters_to_json(counters) + "}";
        };
        if (path == "/__mock/books" && req.method() == http::verb::get) {
            a.response = make(200, report(), req);
        } else if (path == "/__mock/finish-tasks" && req.method() == http::verb::post) {
            finish_all();
            a.response = make(200, report(), req);
        } else {
            a.response = make(404, "{\"error\":\"unknown control endpoint\"}", req);
        }
        return a;
    }

    Action handle(const http::request<http::string_body>& req, bool loopback_peer) {
        std::lock_guard lock(mutex);
        auto url = boost::urls::parse_origin_form(req.target());
        std::string path = url ? std::string(url->path()) : std::string(req.target());
        if (config.control_endpoints && path.rfind("/__mock/", 0) == 0) return control(path, loopback_peer, req);

        advance_time();
        ++counters.requests;
        Flavor f;
        Endpoint e;
        route(path, config.v1_flavor, f, e);
        if (e == Endpoint::balance) ++counters.balance_requests;
        if (e == Endpoint::create) ++counters.creates;
        if (e == Endpoint::status) ++counters.polls;

        const Pick pick = draw();
        Action a = answer(req, url, f, e, pick);
        a.delay = std::max(a.delay, delay);
        if (a.processed) lose_reply(a, req, e, pick);
        return a;
    }

    /// The faults after processing: the request took effect, and its answer is lost.
    void lose_reply(Action& a, const http::request<http::string_body>& req, Endpoint e, const Pick& pick) {
        if (reset_after.n > 0 && matches(reset_after.which, e)) {
            --reset_after.n;
            ++counters.resets_after_processing;
            a.kind = Action::reset;
            return;
        }
        if (gateway_after.n > 0 && matches(gateway_after.which, e)) {
            --gateway_after.n;
            ++counters.gateway_errors_after_processing;
            a.response = gateway_page(gateway_after.status, req);
            return;
        }
        if (delay_after.n > 0 && matches(delay_after.which, e)) {
            --delay_after.n;
            ++counters.replies_delayed;
            a.delay = std::max(a.delay, delay_after.delay);
            return;
        }
        switch (pick.fault) {
        case RandomFault::reset_after:
            ++counters.resets_after_processing;
            a.kind = Action::reset;
            break;
        case RandomFault::gateway_after:
            ++counters.gateway_errors_after_processing;
            a.response = gateway_page(pick.param < 0.5 ? 502 : 504, req);
            break;
        case RandomFault::delay_after:
            ++counters.replies_delayed;
            a.delay = std::max(a.delay, random.reply_delay);
            break;
        default: break;
        }
    }

    Response burst_answer(Flavor f, const http::request<http::string_body>& req) {
        ++counters.burst_answers;
        if (burst_kind == RandomFault::maintenance_burst) {
            ++counters.maintenance_answers;
            return error(f, maintenance_code(f), "The system is under maintenance, please try again later", req);
        }
        ++counters.rate_limited_answers;
        Response r = error(f, rate_code(f),
                           f == Flavor::sunoapi ? "Your call frequency is too high. Please try again later."
                                                : "Rate limit exceeded. Please try again later.",
                           req);
        if (burst_retry_after) r.set(http::field::retry_after, "1");
        return r;
    }

    using Target = decltype(boost::urls::parse_origin_form(std::string_view{}));

    /// Everything before processing, then processing: the answer the request gets unless it is lost.
    Action answer(const http::request<http::string_body>& req, const Target& url, Flavor f, Endpoint e,
                  const Pick& pick) {
        Action a;
        if (reset_before_n > 0 && matches(reset_before_which, e)) {
            --reset_before_n;
            ++counters.resets_before_processing;
            a.kind = Action::reset;
            return a;
        }
        if (truncate_n > 0) {
            --truncate_n;
            ++counters.truncated_answers;
            a.kind = Action::truncate;
            a.response = truncated_answer(req);
            return a;
        }
        if (!injected.empty()) {
            auto& [n, canned] = injected.front();
            a.response = make(canned.status, canned.body, req, canned.content_type);
            for (const auto& [k, v] : canned.headers)
                a.response.set(k, v);
            if (--n <= 0) injected.pop_front();
            return a;
        }
        if (http500_n > 0) {
            --http500_n;
            ++counters.server_errors;
            json::object body{{"code", 500}, {msg_key(f), "internal server error"}, {"data", nullptr}};
            a.response = make(500, json::serialize(body), req);
            return a;
        }
        if (gateway_n > 0) {
            --gateway_n;
            ++counters.server_errors;
            a.response = gateway_page(gateway_status, req);
            return a;
        }
        if (malformed_n > 0) {
            --malformed_n;
            ++counters.malformed_answers;
            a.response = malformed_answer(req);
            return a;
        }
        switch (pick.fault) {
        case RandomFault::reset_before:
            ++counters.resets_before_processing;
            a.kind = Action::reset;
            return a;
        case RandomFault::server_error:
            ++counters.server_errors;
            if (pick.param < 1.0 / 3) {
                json::object body{{"code", 500}, {msg_key(f), "internal server error"}, {"data", nullptr}};
                a.response = make(500, json::serialize(body), req);
            } else if (pick.param < 2.0 / 3) {
                a.response = gateway_page(pick.param < 0.5 ? 502 : 504, req);
            } else {  // HTTP 200 with the error in the body, as the providers document their errors
                json::object body{
                    {"code", 500}, {msg_key(f), "Server error, please try again later"}, {"data", nullptr}};
                a.response = make(200, json::serialize(body), req);
            }
            return a;
        case RandomFault::malformed:
            ++counters.malformed_answers;
            a.response = malformed_answer(req);
            return a;
        case RandomFault::truncated:
            ++counters.truncated_answers;
            a.kind = Action::truncate;
            a.response = truncated_answer(req);
            return a;
        case RandomFault::rate_burst:
        case RandomFault::maintenance_burst:
            burst_kind = pick.fault;
            burst_left = 1 + static_cast<int>(pick.param * std::max(random.burst_max_requests, 1));
            burst_retry_after = pick.fault == RandomFault::rate_burst && pick.param < 0.5;
            break;
        default: break;
        }
        if (burst_left > 0) {
            --burst_left;
            a.response = burst_answer(f, req);
            return a;
        }
        if (maintenance == MaintenanceMode::html_page) {
            ++counters.maintenance_answers;
            a.response = make(503,
                              "<!DOCTYPE html><html><head><title>Maintenance</title></head>"
                              "<body><h1>We'll be back soon</h1><p>Scheduled maintenance.</p></body></html>",
                              req, "text/html");
            return a;
        }
        if (maintenance == MaintenanceMode::code) {
            ++counters.maintenance_answers;
            a.response = error(f, maintenance_code(f), "The system is under maintenance, please try again later", req);
            return a;
        }
        if (rate_max > 0) {
            const auto now = clock->now();
            if (rate_count == 0 || now - rate_window_start >= rate_window) {
                rate_window_start = now;
                rate_count = 0;
            }
            if (++rate_count > rate_max) {
                ++counters.rate_limited_answers;
                a.response = error(f, rate_code(f),
                                   f == Flavor::sunoapi ? "Your call frequency is too high. Please try again later."
                                                        : "Rate limit exceeded. Please try again later.",
                                   req);
                if (rate_retry_after) a.response.set(http::field::retry_after, *rate_retry_after);
                return a;
            }
        }
        if (code_until) {
            if (clock->now() < *code_until) {
                ++counters.burst_answers;
                a.response = error(f, window_code, window_message, req);
                if (window_retry_after) a.response.set(http::field::retry_after, *window_retry_after);
                return a;
            }
            code_until.reset();
        }
        if (code_n > 0) {
            --code_n;
            a.response = error(f, injected_code, injected_message, req);
            return a;
        }
        a.processed = true;
        if (e == Endpoint::unknown) {
            a.response = error(f, 404, "Invalid request method or path", req);
            return a;
        }
        if (!authorized(f, req)) {
            ++counters.unauthorized_answers;
            a.response = error(f, 401, "Unauthorized: invalid API key", req);
            return a;
        }
        switch (e) {
        case Endpoint::balance: a.response = balance(f, req); break;
        case Endpoint::create: a.response = create(f, req); break;
        case Endpoint::status: {
            const char* param = f == Flavor::udioapi ? "workId"
                                : f == Flavor::crun  ? "task_id"
                                : f == Flavor::gcui  ? "ids"
                                                     : "taskId";
            std::string id;
            if (url)
                for (auto p : url->params())
                    if (p.key == param) id = p.value;
            a.response = status(f, req, id);
            break;
        }
        case Endpoint::estimate: {  // what a task would cost: the price it settles at
            if (req.method() != http::verb::post) {
                a.response = error(f, 404, "Invalid request method or path", req);
                break;
            }
            const Credits price = config.actual_cost.value_or(config.cost);
            a.response = ok(f, {{"data", json::object{{"credits", price}, {"estimated", true}}}}, req);
            break;
        }
        case Endpoint::unknown: break;
        }
        return a;
    }

    Response balance(Flavor f, const http::request<http::string_body>& req) {
        switch (f) {
        case Flavor::sunoapi:
        case Flavor::kie: return ok(f, {{"data", credits}}, req);
        case Flavor::udioapi: return ok(f, {{"data", json::object{{"credits", credits}, {"used_credits", used}}}}, req);
        case Flavor::crun: return ok(f, {{"data", json::object{{"balance", credits}}}}, req);
        case Flavor::sunorcc: {
            Credits frozen = 0;  // charged at submit, tasks still running
            for (const auto& [id, t] : tasks)
                if (in_flight(t)) frozen += t.charged_amount;
            return ok(f,
                      {{"data", json::object{{"available", credits}, {"frozen", frozen}, {"total", credits + frozen}}}},
                      req);
        }
        case Flavor::credits_split: {
            const Credits extra = credits > 0 ? credits / 4 : 0;
            return make(200, json::serialize(json::object{{"credits", credits - extra}, {"extra_credits", extra}}),
                        req);
        }
        case Flavor::gcui:
            return make(200,
                        json::serialize(json::object{{"credits_left", credits},
                                                     {"period", "day"},
                                                     {"monthly_limit", credits + used},
                                                     {"monthly_usage", used}}),
                        req);
        }
        return error(f, 500, "unreachable", req);
    }

    Response create(Flavor f, const http::request<http::string_body>& req) {
        if (req.method() != http::verb::post) return error(f, 404, "Invalid request method or path", req);
        error_code ec;
        auto body = json::parse(req.body(), ec);
        if (ec || !body.is_object())
            return error(f, f == Flavor::crun ? 422 : 400, "Invalid parameters: a JSON object is required", req);
        if (credits < config.cost) {
            ++counters.insufficient_answers;
            return error(f, insufficient_code(f), "Insufficient credits, please top up your balance", req);
        }
        Task t;
        t.id = "task-" + std::to_string(++task_seq);
        t.flavor = f;
        ++tasks_per_job[job_key(req.body(), body)];
        if (fail_tasks_n > 0) {
            --fail_tasks_n;
            t.will_fail = true;
        } else if (failure_rate > 0) {
            t.will_fail = std::uniform_real_distribution<double>(0.0, 1.0)(rng) < failure_rate;
        }
        if (config.deduct == DeductionTiming::at_submit) {
            charge(config.cost);
            t.charged = true;
            t.charged_amount = config.cost;
        }
        ++counters.tasks_created;
        const std::string id = t.id;
        tasks.emplace(id, std::move(t));
        if (config.finish_unpolled_after) unpolled.emplace_back(clock->now(), id);
        switch (f) {
        case Flavor::sunoapi:
        case Flavor::kie: return ok(f, {{"data", json::object{{"taskId", id}}}}, req);
        case Flavor::udioapi: return ok(f, {{"workId", id}, {"data", json::object{{"task_id", id}}}}, req);
        case Flavor::crun: return ok(f, {{"data", json::object{{"task_id", id}}}}, req);
        case Flavor::gcui: return make(200, json::serialize(json::array{gcui_clip(tasks.at(id))}), req);
        default: break;
        }
        return error(f, 500, "unreachable", req);
    }

    void finish(Task& t) {
        const Credits price = config.actual_cost.value_or(config.cost);
        if (t.will_fail) {
            t.phase = TaskPhase::failed;
            ++books.tasks_failed;
            t.fail_reason = "generation failed, your credits have been refunded";
            if (t.charged && config.refund_failed) {
                give_back(t.charged_amount);
                t.charged_amount = 0;
            }
            return;
        }
        if (t.charged) {  // charged `cost` at submit; settle the difference to the actual price
            if (price > t.charged_amount)
                charge(price - t.charged_amount);
            else if (price < t.charged_amount)
                give_back(t.charged_amount - price);
            t.charged_amount = price;
        } else if (credits >= price || config.overdraft_at_completion) {
            charge(price);  // may take the balance below 0: the books record the overspend
            t.charged = true;
            t.charged_amount = price;
        } else {
            ++counters.insufficient_answers;
            ++books.tasks_failed;
            t.phase = TaskPhase::failed;
            t.fail_reason = "insufficient credits";
            return;
        }
        ++books.tasks_succeeded;
        t.phase = TaskPhase::success;
    }

    static json::object gcui_clip(const Task& t) {
        const char* s = t.phase == TaskPhase::pending   ? "submitted"
                        : t.phase == TaskPhase::running ? "streaming"
                        : t.phase == TaskPhase::success ? "complete"
                                                        : "error";
        return json::object{{"id", t.id},
                            {"status", s},
                            {"audio_url", t.phase == TaskPhase::success ? "https://cdn.invalid/" + t.id + ".mp3" : ""},
                            {"error_message", t.phase == TaskPhase::failed ? t.fail_reason : ""}};
    }

    Response status(Flavor f, const http::request<http::string_body>& req, const std::string& id) {
        auto it = tasks.find(id);
        if (it == tasks.end() || it->second.flavor != f) return error(f, 404, "Task not found", req);
        Task& t = it->second;
        if (t.phase == TaskPhase::pending || t.phase == TaskPhase::running) {
            ++t.polls;
            if (t.polls >= config.polls_to_complete)
                finish(t);
            else
                t.phase = t.polls == 1 ? TaskPhase::pending : TaskPhase::running;
        }
        const bool done = t.phase == TaskPhase::success || t.phase == TaskPhase::failed;
        switch (f) {
        case Flavor::sunoapi:
        case Flavor::kie: {
            const char* s = t.phase == TaskPhase::pending   ? "PENDING"
                            : t.phase == TaskPhase::running ? "TEXT_SUCCESS"
                            : t.phase == TaskPhase::success ? "SUCCESS"
                                                            : "GENERATE_AUDIO_FAILED";
            json::array songs;
            if (t.phase == TaskPhase::success)
                for (int i = 0; i < 2; ++i)
                    songs.push_back(json::object{{"id", t.id + "-" + std::to_string(i)},
                                                 {"audioUrl", "https://cdn.invalid/" + t.id + ".mp3"}});
            json::object data{
                {"taskId", t.id},
                {"status", s},
                {"response", json::object{{"sunoData", std::move(songs)}}},
                {"errorCode", t.phase == TaskPhase::failed ? json::value(531) : json::value(nullptr)},
                {"errorMessage", t.phase == TaskPhase::failed ? json::value(t.fail_reason) : json::value(nullptr)}};
            return ok(f, {{"data", std::move(data)}}, req);
        }
        case Flavor::udioapi: {
            const char* type = t.phase == TaskPhase::pending   ? "PENDING"
                               : t.phase == TaskPhase::running ? "IN_PROGRESS"
                               : t.phase == TaskPhase::success ? "SUCCESS"
                                                               : "FAILED";
            json::object item{
                {"id", t.id},
                {"audio_url", t.phase == TaskPhase::success ? "https://cdn.invalid/" + t.id + ".mp3" : ""},
                {"status", done ? "complete" : (t.phase == TaskPhase::pending ? "text" : "first")},
                {"fail_message", t.phase == TaskPhase::failed ? t.fail_reason : ""},
                {"error_message", ""}};
            return ok(f, {{"data", json::object{{"type", type}, {"response_data", json::array{std::move(item)}}}}},
                      req);
        }
        case Flavor::crun: {
            const char* s = t.phase == TaskPhase::pending   ? "pending"
                            : t.phase == TaskPhase::running ? "running"
                            : t.phase == TaskPhase::success ? "success"
                                                            : "failed";
            json::object data{{"task_id", t.id}, {"status", s}};
            data["result"] = t.phase == TaskPhase::success
                                 ? json::value(json::object{{"audio_url", "https://cdn.invalid/" + t.id + ".mp3"}})
                                 : json::value(nullptr);
            if (done) data["credits"] = t.charged_amount;
            if (t.phase == TaskPhase::failed) data["error"] = t.fail_reason;
            return ok(f, {{"data", std::move(data)}}, req);
        }
        case Flavor::gcui: return make(200, json::serialize(json::array{gcui_clip(t)}), req);
        default: break;
        }
        return error(f, 500, "unreachable", req);
    }

    // ---- strand only ----
    void close_session(SessionHandle& h, bool reset) {
        if (h.timer) h.timer->cancel();
        if (!h.lowest) return;
        error_code ignored;
        auto& s = h.lowest->socket();
        if (reset)
            s.set_option(tcp::socket::linger(true, 0), ignored);
        else
            s.shutdown(tcp::socket::shutdown_both, ignored);
        s.close(ignored);
    }

    void shutdown_all() {
        stopped = true;
        error_code ignored;
        acceptor.close(ignored);
        for (const auto& h : sessions)
            close_session(*h, false);
    }

    /// Closes idle sessions now and sessions writing an answer as soon as it is written; `barrier` is
    /// released when all of them are closed.
    void close_idle(const std::shared_ptr<void>& barrier) {
        for (const auto& h : sessions) {
            if (h->idle)
                close_session(*h, false);
            else if (h->writing)
                h->close_after_write.push_back(barrier);
        }
    }

    asio::strand<asio::any_io_executor> strand;
    tcp::acceptor acceptor;
    std::optional<ssl::context> tls;
    unsigned short port = 0;
    bool stopped = false;                               // strand
    std::set<std::shared_ptr<SessionHandle>> sessions;  // strand

    mutable std::mutex mutex;
    mutable std::condition_variable counters_changed;  // after every request answered (wait_for_counters)
    MockConfig config;
    SecretString key{config.key};
    Credits credits = 0;
    Credits used = 0;
    MockCounters counters;
    std::map<std::string, Task> tasks;
    std::uint64_t task_seq = 0;
    std::mt19937 rng;
    ErrorStyle style = ErrorStyle::body_code;
    MaintenanceMode maintenance = MaintenanceMode::off;
    int rate_max = 0;
    std::chrono::milliseconds rate_window{0};
    std::optional<std::string> rate_retry_after;
    std::chrono::steady_clock::time_point rate_window_start{};
    int rate_count = 0;
    int http500_n = 0, malformed_n = 0, truncate_n = 0, code_n = 0, fail_tasks_n = 0;
    int injected_code = 0;
    std::string injected_message;
    std::deque<std::pair<int, CannedResponse>> injected;
    std::chrono::milliseconds delay{0};
    double failure_rate = config.failure_rate;
    std::shared_ptr<Clock> clock = config.clock;

    int reset_before_n = 0;
    MockEndpoint reset_before_which = MockEndpoint::any;
    int gateway_n = 0;
    unsigned gateway_status = 502;
    struct AfterFault {
        int n = 0;
        MockEndpoint which = MockEndpoint::any;
        std::chrono::milliseconds delay{0};
        unsigned status = 504;
    };
    AfterFault reset_after, delay_after, gateway_after;
    std::optional<TimePoint> code_until;  // respond_with_code_for
    int window_code = 0;
    std::string window_message;
    std::optional<std::string> window_retry_after;

    // Random fault mode.
    bool random_on = false;
    RandomFaults random;
    SplitMix rng_faults;
    RandomFault burst_kind = RandomFault::none;
    int burst_left = 0;
    bool burst_retry_after = false;

    // The foreign spender and the books.
    double foreign_rate = 0;
    double foreign_acc = 0;
    TimePoint foreign_last{};
    MockBooks books;
    std::map<std::string, std::uint64_t> tasks_per_job;
    std::deque<std::pair<TimePoint, std::string>> unpolled;  // finish_unpolled_after, in creation order
};

namespace {

using Impl = MockProvider::Impl;

template <class Stream>
asio::awaitable<void> serve(std::shared_ptr<Impl> impl, Stream& stream, std::shared_ptr<SessionHandle> h) {
    beast::flat_buffer buffer;
    auto& lowest = beast::get_lowest_layer(stream);
    const bool loopback_peer = [&] {
        error_code ec;
        const auto peer = lowest.socket().remote_endpoint(ec);
        return !ec && peer.address().is_loopback();
    }();
    for (;;) {
        h->idle = true;
        http::request_parser<http::string_body> parser;
        parser.body_limit(1 << 20);
        error_code ec;
        co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
        if (ec || impl->stopped) co_return;
        h->idle = false;
        Action a = impl->handle(parser.get(), loopback_peer);
        impl->counters_changed.notify_all();
        if (a.delay.count() > 0) {
            asio::steady_timer timer(impl->strand);
            h->timer = &timer;
            timer.expires_after(a.delay);
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            h->timer = nullptr;
            if (impl->stopped || !lowest.socket().is_open()) co_return;
        }
        if (a.kind == Action::reset) {
            impl->close_session(*h, true);
            co_return;
        }
        if (a.kind == Action::truncate) {
            const std::string& body = a.response.body();
            std::string raw =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                "\r\n\r\n" + body.substr(0, body.size() / 2);
            co_await asio::async_write(stream, asio::buffer(raw), asio::redirect_error(asio::use_awaitable, ec));
            impl->close_session(*h, false);
            co_return;
        }
        const bool keep = a.response.keep_alive();
        h->writing = true;
        co_await http::async_write(stream, a.response, asio::redirect_error(asio::use_awaitable, ec));
        h->writing = false;
        if (!h->close_after_write.empty()) {
            impl->close_session(*h, false);
            h->close_after_write.clear();
            co_return;
        }
        if (ec || !keep) co_return;
    }
}

asio::awaitable<void> session(std::shared_ptr<Impl> impl, tcp::socket socket) {
    auto h = std::make_shared<SessionHandle>();
    impl->sessions.insert(h);
    if (impl->tls) {
        beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *impl->tls);
        h->lowest = &beast::get_lowest_layer(stream);
        h->lowest->expires_after(std::chrono::seconds(30));
        error_code ec;
        co_await stream.async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
        h->lowest->expires_never();
        if (!ec && !impl->stopped) co_await serve(impl, stream, h);
        impl->close_session(*h, false);
        h->lowest = nullptr;
    } else {
        beast::tcp_stream stream(std::move(socket));
        h->lowest = &stream;
        co_await serve(impl, stream, h);
        impl->close_session(*h, false);
        h->lowest = nullptr;
    }
    h->close_after_write.clear();
    impl->sessions.erase(h);
}

asio::awaitable<void> accept_loop(std::shared_ptr<Impl> impl) {
    for (;;) {
        error_code ec;
        tcp::socket socket = co_await impl->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
        if (impl->stopped || !impl->acceptor.is_open()) co_return;
        if (ec) continue;
        {
            std::lock_guard lock(impl->mutex);
            ++impl->counters.connections_accepted;
        }
        asio::co_spawn(impl->strand, session(impl, std::move(socket)), asio::detached);
    }
}

}  // namespace

MockProvider::MockProvider(MockConfig config) : own_(std::make_unique<asio::io_context>(1)) {
    impl_ = std::make_shared<Impl>(own_->get_executor(), std::move(config));
    asio::co_spawn(impl_->strand, accept_loop(impl_), asio::detached);
    thread_ = std::thread([ctx = own_.get()] { ctx->run(); });
}

MockProvider::MockProvider(asio::any_io_executor executor, MockConfig config)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(config))) {
    asio::co_spawn(impl_->strand, accept_loop(impl_), asio::detached);
}

MockProvider::~MockProvider() {
    stop();
}

void MockProvider::stop() {
    if (impl_->strand.running_in_this_thread()) {
        impl_->shutdown_all();
    } else {
        asio::post(impl_->strand, [impl = impl_] { impl->shutdown_all(); });
    }
    if (thread_.joinable()) thread_.join();  // run() returns once every session has ended
}

unsigned short MockProvider::port() const noexcept {
    return impl_->port;
}

std::string MockProvider::base_url() const {
    return std::string(impl_->tls ? "https://" : "http://") + impl_->config.address + ":" + std::to_string(impl_->port);
}

Credits MockProvider::credits() const {
    std::lock_guard lock(impl_->mutex);
    impl_->advance_time();
    return impl_->credits;
}
void MockProvider::add_credits(Credits amount) {
    std::lock_guard lock(impl_->mutex);
    impl_->advance_time();
    impl_->credits += amount;
    impl_->books.topped_up += amount;
    impl_->note_balance();
}
void MockProvider::set_credits(Credits amount) {
    std::lock_guard lock(impl_->mutex);
    impl_->advance_time();
    impl_->books.adjusted += amount - impl_->credits;
    impl_->credits = amount;
    impl_->note_balance();
}
MockBooks MockProvider::books() const {
    std::lock_guard lock(impl_->mutex);
    impl_->advance_time();
    return impl_->current_books();
}
void MockProvider::finish_all_tasks() {
    std::lock_guard lock(impl_->mutex);
    impl_->advance_time();
    impl_->finish_all();
}
void MockProvider::set_foreign_spend(double credits_per_second) {
    std::lock_guard lock(impl_->mutex);
    impl_->advance_time();  // the old rate up to now
    impl_->foreign_rate = std::max(credits_per_second, 0.0);
}
MockCounters MockProvider::counters() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->counters;
}
bool MockProvider::wait_for_counters(const std::function<bool(const MockCounters&)>& done,
                                     std::chrono::milliseconds limit) const {
    std::unique_lock lock(impl_->mutex);
    return impl_->counters_changed.wait_for(lock, limit, [&] { return done(impl_->counters); });
}
std::size_t MockProvider::tasks_in_flight() const {
    std::lock_guard lock(impl_->mutex);
    std::size_t n = 0;
    for (const auto& [id, t] : impl_->tasks)
        n += in_flight(t);
    return n;
}
void MockProvider::set_error_style(ErrorStyle style) {
    std::lock_guard lock(impl_->mutex);
    impl_->style = style;
}
void MockProvider::set_rate_limit(int max_requests, std::chrono::milliseconds window,
                                  std::optional<std::string> retry_after) {
    std::lock_guard lock(impl_->mutex);
    impl_->rate_max = max_requests;
    impl_->rate_window = window;
    impl_->rate_retry_after = std::move(retry_after);
    impl_->rate_count = 0;
}
void MockProvider::set_maintenance(MaintenanceMode mode) {
    std::lock_guard lock(impl_->mutex);
    impl_->maintenance = mode;
}
void MockProvider::fail_next_with_http_500(int n) {
    std::lock_guard lock(impl_->mutex);
    impl_->http500_n = n;
}
void MockProvider::fail_next_with_gateway_error(int n, unsigned status) {
    std::lock_guard lock(impl_->mutex);
    impl_->gateway_n = n;
    impl_->gateway_status = status;
}
void MockProvider::respond_next_with_code(int n, int code, std::string message) {
    std::lock_guard lock(impl_->mutex);
    impl_->code_n = n;
    impl_->injected_code = code;
    impl_->injected_message = std::move(message);
}
void MockProvider::respond_with_code_for(std::chrono::milliseconds window, int code, std::string message,
                                         std::optional<std::string> retry_after) {
    std::lock_guard lock(impl_->mutex);
    if (window.count() <= 0) {
        impl_->code_until.reset();
        return;
    }
    impl_->code_until = impl_->clock->now() + window;
    impl_->window_code = code;
    impl_->window_message = std::move(message);
    impl_->window_retry_after = std::move(retry_after);
}
void MockProvider::inject_next(int n, CannedResponse response) {
    std::lock_guard lock(impl_->mutex);
    if (n > 0) impl_->injected.emplace_back(n, std::move(response));
}
void MockProvider::malformed_next(int n) {
    std::lock_guard lock(impl_->mutex);
    impl_->malformed_n = n;
}
void MockProvider::truncate_next(int n) {
    std::lock_guard lock(impl_->mutex);
    impl_->truncate_n = n;
}
void MockProvider::reset_next(int n) {
    reset_next_before_processing(n);
}
void MockProvider::reset_next_before_processing(int n, MockEndpoint which) {
    std::lock_guard lock(impl_->mutex);
    impl_->reset_before_n = n;
    impl_->reset_before_which = which;
}
void MockProvider::reset_next_after_processing(int n, MockEndpoint which) {
    std::lock_guard lock(impl_->mutex);
    impl_->reset_after = {n, which, {}, 0};
}
void MockProvider::delay_next_after_processing(int n, std::chrono::milliseconds delay, MockEndpoint which) {
    std::lock_guard lock(impl_->mutex);
    impl_->delay_after = {n, which, delay, 0};
}
void MockProvider::gateway_error_next_after_processing(int n, unsigned status, MockEndpoint which) {
    std::lock_guard lock(impl_->mutex);
    impl_->gateway_after = {n, which, {}, status};
}
void MockProvider::set_random_faults(RandomFaults faults) {
    std::lock_guard lock(impl_->mutex);
    auto& impl = *impl_;
    impl.advance_time();
    impl.random_on = faults.reset_before_processing > 0 || faults.reset_after_processing > 0 ||
                     faults.delay_after_processing > 0 || faults.gateway_error_after_processing > 0 ||
                     faults.server_error > 0 || faults.malformed > 0 || faults.truncated > 0 ||
                     faults.rate_limit_burst > 0 || faults.maintenance_burst > 0 || faults.top_up > 0;
    impl.rng_faults = SplitMix{faults.seed};
    impl.burst_left = 0;
    if (faults.foreign_spend_per_second > 0) impl.foreign_rate = faults.foreign_spend_per_second;
    impl.random = std::move(faults);
}
void MockProvider::set_delay(std::chrono::milliseconds delay) {
    std::lock_guard lock(impl_->mutex);
    impl_->delay = delay;
}
void MockProvider::set_key(SecretString key) {
    std::lock_guard lock(impl_->mutex);
    impl_->key = std::move(key);
}
void MockProvider::fail_next_tasks(int n) {
    std::lock_guard lock(impl_->mutex);
    impl_->fail_tasks_n = n;
}
void MockProvider::set_failure_rate(double rate) {
    std::lock_guard lock(impl_->mutex);
    impl_->failure_rate = rate;
}

void MockProvider::close_idle_connections() {
    if (impl_->strand.running_in_this_thread()) {
        impl_->close_idle(std::shared_ptr<void>());
        return;
    }
    if (!thread_.joinable()) {  // executor mode, called from elsewhere: the caller runs the executor
        asio::post(impl_->strand, [impl = impl_] { impl->close_idle(std::shared_ptr<void>()); });
        return;
    }
    auto done = std::make_shared<std::promise<void>>();
    auto f = done->get_future();
    asio::post(impl_->strand, [impl = impl_, done] {
        // Released (and `done` set) once every targeted session is closed.
        std::shared_ptr<void> barrier(nullptr, [done](void*) { done->set_value(); });
        impl->close_idle(barrier);
    });
    f.wait();
}

std::string books_to_json(const MockBooks& b) {
    json::array duplicated;
    for (const auto& [key, n] : b.duplicated_jobs)
        duplicated.push_back(json::object{{"job", key}, {"tasks", n}});
    json::object o{
        {"balance", b.balance},
        {"starting_balance", b.starting_balance},
        {"lowest_balance", b.lowest_balance},
        {"lowest_balance_own", b.lowest_balance_own},
        {"overspent", b.overspent},
        {"overdrawing_charges", b.overdrawing_charges},
        {"charged", b.charged},
        {"refunded", b.refunded},
        {"topped_up", b.topped_up},
        {"adjusted", b.adjusted},
        {"foreign_spent", b.foreign_spent},
        {"tasks_created", b.tasks_created},
        {"tasks_succeeded", b.tasks_succeeded},
        {"tasks_failed", b.tasks_failed},
        {"tasks_in_flight", b.tasks_in_flight},
        {"tasks_finished_unpolled", b.tasks_finished_unpolled},
        {"distinct_jobs", b.distinct_jobs},
        {"max_tasks_per_job", b.max_tasks_per_job},
        {"duplicated_jobs", std::move(duplicated)},
    };
    return json::serialize(o);
}

std::string counters_to_json(const MockCounters& c) {
    json::object o{
        {"requests", c.requests},
        {"balance_requests", c.balance_requests},
        {"creates", c.creates},
        {"tasks_created", c.tasks_created},
        {"polls", c.polls},
        {"insufficient_answers", c.insufficient_answers},
        {"rate_limited_answers", c.rate_limited_answers},
        {"unauthorized_answers", c.unauthorized_answers},
        {"connections_accepted", c.connections_accepted},
        {"resets_before_processing", c.resets_before_processing},
        {"resets_after_processing", c.resets_after_processing},
        {"replies_delayed", c.replies_delayed},
        {"gateway_errors_after_processing", c.gateway_errors_after_processing},
        {"server_errors", c.server_errors},
        {"malformed_answers", c.malformed_answers},
        {"truncated_answers", c.truncated_answers},
        {"burst_answers", c.burst_answers},
        {"maintenance_answers", c.maintenance_answers},
        {"top_ups", c.top_ups},
    };
    return json::serialize(o);
}

}  // namespace creditguard
