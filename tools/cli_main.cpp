// creditguard: the command-line tool.
//   creditguard balance --provider ID [--base-url URL]
//   creditguard run [--provider ID] [--base-url URL] [--jobs N] [--concurrency C] [--cost K]
//                   [--policy queue|reject] [--max-wait SECONDS] [--json] ...
//   creditguard mock [--port P] [--credits N] [--cost K] [--deduct submit|complete] ...
// The API key comes from CREDITGUARD_API_KEY or --api-key-file PATH, never from an argument.
#include "cli_options.hpp"
#include "metrics_server.hpp"
#include "mock_command.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/metrics.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/provider_json.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/redis/rate_gate.hpp>
#include <creditguard/request_budget.hpp>
#include <creditguard/testing/mock_provider.hpp>
#include <creditguard/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace cg = creditguard;
using cg_cli::Options;

// One line on stderr naming the error kind (machine-readable first word), then exit 1.
int fail(std::string_view kind, std::string_view detail) {
    std::cerr << "error: " << kind;
    if (!detail.empty()) std::cerr << ": " << detail;
    std::cerr << "\n";
    return 1;
}

int fail(const boost::system::error_code& ec) {
    if (ec.category() == cg::error_category())
        return fail(cg::to_string(static_cast<cg::errc>(ec.value())), ec.message());
    return fail("error", ec.message());
}

std::optional<cg::ProviderConfig> provider_for(const Options& o, std::string& why) {
    if (o.custom_provider) {  // from --config
        cg::ProviderConfig config = *o.custom_provider;
        if (!o.base_url.empty()) config.base_url = o.base_url;
        if (config.base_url.empty()) why = "the config file's provider has no base_url (nor was --base-url given)";
        return config.base_url.empty() ? std::nullopt : std::optional(std::move(config));
    }
    auto config = cg::builtin_provider(o.provider, o.base_url);
    if (!config) why = "unknown provider '" + o.provider + "' (" + cg::builtin_provider_ids() + ")";
    return config;
}

// A provider whose requests carry no key (a self-hosted server) needs none.
std::optional<cg::SecretString> key_for(const cg::ProviderConfig& config, const Options& o, std::string& why) {
    if (config.auth_style == cg::AuthStyle::none) return cg::SecretString();
    return cg_cli::load_api_key(o, why);
}

// --------------------------------------------------------------------------------------------
// balance

int balance_command(const Options& o) {
    std::string why;
    auto config = provider_for(o, why);
    if (!config) return cg_cli::usage(why);
    auto key = key_for(*config, o, why);
    if (!key) return cg_cli::usage(why);
    asio::io_context ioc;
    try {
        cg::Provider provider(cg::HttpClient(ioc.get_executor(), o.http), *config, std::move(*key));
        boost::system::error_code result_ec;
        cg::BalanceReply reply;
        provider.async_balance([&](boost::system::error_code ec, cg::BalanceReply r) {
            result_ec = ec;
            reply = std::move(r);
        });
        ioc.run();
        if (result_ec) return fail(result_ec);
        boost::json::object out{{"provider", o.provider}, {"balance", reply.balance}};
        std::cout << boost::json::serialize(out) << "\n";
        return 0;
    } catch (const std::exception& e) {
        return fail("invalid_configuration", e.what());
    }
}

// --------------------------------------------------------------------------------------------
// run

cg::Credits saturating_add(cg::Credits a, cg::Credits b) {
    cg::Credits sum = 0;
    if (!__builtin_add_overflow(a, b, &sum)) return sum;
    return b < 0 ? std::numeric_limits<cg::Credits>::min() : std::numeric_limits<cg::Credits>::max();
}

// One account of a run: its options, the embedded mock standing in for it (no --base-url), its provider,
// request budget, shared ledger and guard, and what its jobs did.
struct AccountRun {
    Options o;
    std::string name;  // the config file's account name, else the provider's id
    std::unique_ptr<cg::MockProvider> mock;
    std::optional<cg::ProviderConfig> config;
    std::optional<cg::SecretString> key;
    std::unique_ptr<cg::Provider> provider;
    std::shared_ptr<cg::RequestBudget> budget;  // when pacing
    cg::RedisRateGate* rate_gate = nullptr;     // its windows shared through Redis (--ledger redis://)
    cg::RedisLedger* shared_ledger = nullptr;   // owned by the guard; null once it is gone
    std::unique_ptr<cg::CreditGuard> guard;
    // Taken when the run ends.
    cg::GuardStats stats;
    std::optional<cg::RedisLedgerStats> ledger_stats;
    std::optional<cg::RequestBudgetStats> budget_stats;
    // Its jobs.
    int completed = 0;
    cg::Credits spent = 0;
    int failovers_in = 0;  // jobs that came here after another account refused their create

    cg::MetricLabels labels() const { return {{"provider", o.provider}, {"account", name}}; }
};

struct RunTally {
    cg_cli::MetricsServer* metrics = nullptr;  // --metrics-port, stopped with the run
    int jobs = 0;
    int next = 0;
    int done = 0;
    int completed = 0;
    int rejected = 0;
    int failed = 0;
    int ambiguous = 0;
    int cancelled = 0;        // stopped by a signal before being sent, or (a second signal) while polling
    int stopped_polling = 0;  // of those, submitted jobs abandoned by the second signal
    cg::Credits spent = 0;
    int insufficient = 0;
    int rate_limited = 0;
    int maintenance = 0;
    int workers_left = 0;
    // Jobs that did not complete, by what the runner said (status, error): named and counted at the end.
    std::map<std::pair<cg::JobStatus, boost::system::error_code>, int> outcomes;
    std::vector<std::unique_ptr<AccountRun>> accounts;
    std::unique_ptr<cg::Router> router;  // over every account (one, most often)
    std::vector<const cg::Provider*> providers;
    int failovers = 0;
    cg::Duration credit_wait{};
    cg::Duration permit_wait{};
    // Graceful stop: the first SIGINT/SIGTERM, and whether a second one came.
    int stop_signal = 0;
    bool stop_now = false;
    asio::signal_set* signals = nullptr;
    std::vector<std::unique_ptr<asio::cancellation_signal>> worker_stops;  // one per worker coroutine
};

// The last worker ends the guard, so that the io_context runs out of work: a shared ledger then writes
// what is left through to Redis and gives its lease back before its connections close.
void finish(RunTally& t) {
    if (t.metrics != nullptr) t.metrics->stop();
    if (t.signals != nullptr) t.signals->cancel();
    for (auto& a : t.accounts) {
        a->stats = a->guard->stats();
        if (a->shared_ledger != nullptr) a->ledger_stats = a->shared_ledger->ledger_stats();
        a->shared_ledger = nullptr;
        a->guard.reset();
        if (a->budget != nullptr) {
            // Its alarm and any waiting read would keep the io_context running.
            a->budget_stats = a->budget->stats();
            a->budget->shutdown();
            if (a->rate_gate != nullptr) a->rate_gate->close();
        }
    }
}

// The run's accounts as one: what the summary and the causes of failed jobs read when a run routes.
cg::GuardStats merged_stats(const RunTally& t) {
    if (t.accounts.size() == 1) return t.accounts.front()->stats;
    cg::GuardStats m;
    for (const auto& a : t.accounts) {
        const cg::GuardStats& s = a->stats;
        if (s.balance_known) {
            m.balance_known = true;
            m.observed_balance = saturating_add(m.observed_balance, s.observed_balance);
        }
        if (!m.last_refresh_error) m.last_refresh_error = s.last_refresh_error;
        m.refreshes_ok += s.refreshes_ok;
        m.refreshes_failed += s.refreshes_failed;
        m.granted += s.granted;
        m.committed += s.committed;
        m.released += s.released;
        m.settled += s.settled;
        m.refunded += s.refunded;
        m.abandoned += s.abandoned;
        m.live_reservations += s.live_reservations;
        m.unresolved += s.unresolved;
        m.unexplained_spend += s.unexplained_spend;
        m.drift_margin += s.drift_margin;
        m.server_error_signals += s.server_error_signals;
        m.breaker_trips += s.breaker_trips;
    }
    return m;
}

// One scrape: every component of the run (on the io_context's thread, while the run goes).
std::string render_metrics(const RunTally& t) {
    cg::MetricsText out;
    for (const auto& a : t.accounts) {
        const cg::MetricLabels labels = a->labels();
        if (a->guard) cg::write_metrics(out, a->guard->stats(), labels);
        if (a->budget != nullptr) cg::write_metrics(out, a->budget->stats(), labels);
        cg::write_metrics(out, a->provider->http().stats(), labels);
        if (a->shared_ledger != nullptr) cg::write_metrics(out, a->shared_ledger->ledger_stats(), labels);
    }
    // The run's own counters: labelled as its account, or as every account when it routes.
    const cg::MetricLabels labels =
        t.accounts.size() == 1 ? t.accounts.front()->labels() : cg::MetricLabels{{"provider", "*"}, {"account", "*"}};
    out.gauge("creditguard_run_jobs", "Jobs this run was asked for", labels, t.jobs);
    const char* const done = "creditguard_run_jobs_done_total";
    const char* const help = "Jobs of this run that ended, by result";
    const std::pair<const char*, int> results[] = {
        {"completed", t.completed}, {"rejected", t.rejected}, {"failed", t.failed}, {"ambiguous", t.ambiguous}};
    for (const auto& [result, count] : results) {
        cg::MetricLabels l = labels;
        l.emplace_back("result", result);
        out.counter(done, help, l, static_cast<std::uint64_t>(count));
    }
    return out.str();
}

// "20/10s", "unknown" (learned), or "none" (only a cap on running tasks).
std::string limits_text(const cg::RequestBudgetStats& b) {
    if (!b.windows.empty()) return cg::format_rate_limits(b.windows);
    return b.learned_rate ? "unknown" : "none";
}

bool on_loopback(const std::string& base_url) {
    auto u = boost::urls::parse_uri(base_url);
    return u && cg::is_loopback_host(u->host());
}

const char* signal_name(int signal_number) {
    return signal_number == SIGINT ? "SIGINT" : signal_number == SIGTERM ? "SIGTERM" : "a signal";
}

// Emits a stop on every worker: `total` ends jobs not yet sent, `terminal` also stops polling (see runner.hpp).
void stop_workers(RunTally& t, asio::cancellation_type type) {
    for (auto& stop : t.worker_stops)
        stop->emit(type);
}

// First SIGINT/SIGTERM: no new jobs, queued ones end cancelled, submitted ones are polled to their end.
// A second one stops polling: those jobs are abandoned (counted as spent until a balance read shows them).
void on_signal(RunTally& t, const boost::system::error_code& ec, int signal_number) {
    if (ec) return;  // the run ended: the set was cancelled
    const char* name = signal_name(signal_number);
    if (t.stop_signal == 0) {
        t.stop_signal = signal_number;
        std::fprintf(stderr,
                     "\ncreditguard: %s: stopping: no new jobs; jobs already submitted are polled to their end "
                     "(signal again to stop now)\n",
                     name);
        stop_workers(t, asio::cancellation_type::total);
    } else if (!t.stop_now) {
        t.stop_now = true;
        std::fprintf(stderr, "creditguard: %s: stopping now: submitted jobs are no longer polled\n", name);
        stop_workers(t, asio::cancellation_type::terminal);
    }
    t.signals->async_wait([&t](const boost::system::error_code& e, int n) { on_signal(t, e, n); });
}

asio::awaitable<void> worker(const Options& o, RunTally& t) {
    // A graceful stop (total) must reach the job, not only a terminal one; the worker itself never throws for it.
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    co_await asio::this_coro::throw_if_cancelled(false);
    while (t.next < t.jobs && t.stop_signal == 0) {
        const int id = t.next++;
        // Each account's provider builds the create body its API takes from the same prompt.
        const std::string prompt = "creditguard job " + std::to_string(id) + ": a calm piano piece";
        cg::CreateBodyFor body = [prompt](const cg::Provider& p) { return p.make_create_body(prompt); };
        cg::JobResult r = co_await cg::run_guarded_job(*t.router, t.providers, std::move(body), o.cost, o.runner);
        ++t.done;
        t.spent = saturating_add(t.spent, r.charged);  // the provider says what a job cost: never trusted to fit
        AccountRun& account = *t.accounts[r.account];
        account.spent = saturating_add(account.spent, r.charged);
        if (r.status == cg::JobStatus::completed) ++account.completed;
        if (r.failovers > 0) ++account.failovers_in;
        t.failovers += r.failovers;
        t.insufficient += r.insufficient_answers;
        t.rate_limited += r.rate_limited_answers;
        t.maintenance += r.maintenance_answers;
        t.credit_wait += r.credit_wait;
        t.permit_wait += r.permit_wait;
        switch (r.status) {
        case cg::JobStatus::completed: ++t.completed; break;
        case cg::JobStatus::rejected: ++t.rejected; break;
        case cg::JobStatus::ambiguous: ++t.ambiguous; break;
        case cg::JobStatus::cancelled:
            ++t.cancelled;
            if (r.charged > 0) ++t.stopped_polling;
            break;
        default: ++t.failed; break;
        }
        if (r.status != cg::JobStatus::completed) ++t.outcomes[{r.status, r.error}];
    }
    if (--t.workers_left == 0) finish(t);
}

// A routed run starts once every account's first balance read has been answered (or --max-wait has passed):
// the router can only weigh accounts whose balance it knows, and the first burst of jobs would otherwise all
// go to the account that answered first.
asio::awaitable<void> start_workers(const Options& o, RunTally& t) {
    const auto answered = [&t] {
        return std::all_of(t.accounts.begin(), t.accounts.end(), [](const auto& a) {
            const cg::GuardStats s = a->guard->stats();
            return s.refreshes_ok + s.refreshes_failed > 0 || s.terminal;
        });
    };
    if (t.accounts.size() > 1) {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        const auto until = std::chrono::steady_clock::now() + o.max_wait;
        while (!answered() && t.stop_signal == 0 && std::chrono::steady_clock::now() < until) {
            timer.expires_after(std::chrono::milliseconds(5));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
    const auto executor = co_await asio::this_coro::executor;
    for (auto& stop : t.worker_stops)
        asio::co_spawn(executor, worker(o, t), asio::bind_cancellation_slot(stop->slot(), asio::detached));
}

asio::awaitable<void> progress(const RunTally& t) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (t.workers_left > 0) {
        std::size_t waiters = 0;
        cg::Credits available = 0;
        for (const auto& a : t.accounts) {
            if (!a->guard) continue;
            const auto s = a->guard->stats();
            waiters += s.waiters;
            available = saturating_add(available, s.available);
        }
        std::fprintf(stderr,
                     "\r[creditguard] done %d/%d  completed %d  rejected %d  queued %zu  estimate %lld credits   ",
                     t.done, t.jobs, t.completed, t.rejected, waiters, static_cast<long long>(available));
        timer.expires_after(std::chrono::milliseconds(200));
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    std::fprintf(stderr, "\n");
}

// Why jobs did not complete, one entry per distinct cause, keyed by the stable error name (to_string(errc)).
struct Cause {
    int jobs = 0;
    int waited = 0;  ///< timeouts: admission waits that reached --max-wait
    int polled = 0;  ///< timeouts: submitted jobs without a final status within --max-job-time
    boost::system::error_code example;
};

std::string kind_of(const boost::system::error_code& ec) {
    if (!ec) return "unknown";
    if (ec.category() == cg::error_category()) return cg::to_string(static_cast<cg::errc>(ec.value()));
    return "system_error";
}

std::string secs(cg::Duration d) {
    std::ostringstream os;
    os << std::chrono::duration<double>(d).count() << " s";
    return os.str();
}

std::map<std::string, Cause> causes_of(const RunTally& t, const cg::GuardStats& stats) {
    std::map<std::string, Cause> causes;
    for (const auto& [outcome, count] : t.outcomes) {
        auto [status, ec] = outcome;
        const bool admission_timeout = status == cg::JobStatus::rejected && ec == cg::errc::timeout;
        // Waiting for credits until the deadline while the balance stayed unknown: the balance is the cause.
        if (admission_timeout && !stats.balance_known) ec = cg::errc::balance_unknown;
        Cause& cause = causes[kind_of(ec)];
        cause.jobs += count;
        if (ec == cg::errc::timeout) (admission_timeout ? cause.waited : cause.polled) += count;
        if (!cause.example) cause.example = ec;
    }
    return causes;
}

// What a user needs to read to act on the cause. Only fixed texts and numbers: never a provider's message,
// which could echo a request (and with it the key).
std::string describe(const std::string& kind, const Cause& c, const Options& o, const cg::GuardStats& stats,
                     const RunTally& t) {
    if (kind == "unauthorized") return "the provider refused the API key";
    if (kind == "cancelled") {
        const int not_sent = c.jobs - t.stopped_polling;
        std::string text = "the run was stopped by " + std::string(signal_name(t.stop_signal)) + ":";
        if (not_sent > 0) text += " " + std::to_string(not_sent) + " not sent (nothing charged)";
        if (t.stopped_polling > 0)
            text += std::string(not_sent > 0 ? ";" : "") + " " + std::to_string(t.stopped_polling) +
                    " submitted, no longer polled (counted as spent at their reserved cost)";
        return text;
    }
    if (kind == "balance_unknown") {
        if (const auto& e = stats.last_refresh_error)
            return "the balance could not be read (" + kind_of(e) + ": " + e.message() + ")";
        if (stats.refreshes_ok + stats.refreshes_failed == 0) return "no balance read was answered";
        return "the balance was not known when they asked";
    }
    if (kind == "insufficient_credits") {
        std::string text = "the account cannot pay for them (" + std::to_string(o.cost) + " credits each";
        if (stats.balance_known) text += "; last balance read: " + std::to_string(stats.observed_balance);
        return text + ")";
    }
    if (kind == "timeout") {
        std::string text;
        const auto part = [&text](int n, const std::string& what) {
            if (n == 0) return;
            if (!text.empty()) text += "; ";
            text += std::to_string(n) + " " + what;
        };
        std::string credits;
        if (stats.balance_known)
            credits = " (" + std::to_string(o.cost) +
                      " credits each; last balance read: " + std::to_string(stats.observed_balance) + ")";
        part(c.waited, "waited --max-wait " + secs(o.max_wait) + " without being admitted" + credits);
        part(c.polled, "had no final status within --max-job-time " + secs(o.runner.max_job_time));
        part(c.jobs - c.waited - c.polled,
             "got no answer from the provider within --timeout " + secs(o.http.request_timeout));
        return text;
    }
    if (kind == "generation_failed") return "the provider failed the task (its credits were refunded)";
    if (kind == "ambiguous")
        return "the create call's outcome is unknown: counted as spent at the reserved cost, never resent";
    return c.example.message();
}

// One stderr line per distinct cause, most jobs first.
void report_causes(const std::map<std::string, Cause>& causes, const Options& o, const cg::GuardStats& stats,
                   const RunTally& t) {
    std::vector<std::pair<std::string, Cause>> sorted(causes.begin(), causes.end());
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.second.jobs > b.second.jobs; });
    for (const auto& [kind, cause] : sorted)
        std::cerr << "error: " << kind << ": " << cause.jobs << (cause.jobs == 1 ? " job: " : " jobs: ")
                  << describe(kind, cause, o, stats, t) << "\n";
}

// 0: every job completed (or there were none); 3: the only cause is insufficient credits, with the balance
// known (balance_unknown is a separate cause); 1: anything else.
int exit_code_of(const std::map<std::string, Cause>& causes) {
    if (causes.empty()) return 0;
    if (causes.size() == 1 && causes.begin()->first == "insufficient_credits") return 3;
    return 1;
}

// The registry as the user sees it: one line per built-in provider, or one JSON array.
int providers_command(int argc, char** argv) {
    if (argc >= 2 && std::string_view(argv[1]) == "--show") {
        // One provider's whole configuration, as a --config file's "provider" object takes it.
        const auto config = argc == 3 ? cg::builtin_provider(argv[2]) : std::nullopt;
        if (!config) return cg_cli::usage("providers --show takes a built-in id (" + cg::builtin_provider_ids() + ")");
        std::cout << boost::json::serialize(cg::provider_config_to_json(*config)) << "\n";
        return 0;
    }
    const bool json = argc == 2 && std::string_view(argv[1]) == "--json";
    if (argc > 2 || (argc == 2 && !json)) return cg_cli::usage("providers takes only --json");
    boost::json::array out;
    for (const auto& b : cg::builtin_providers()) {
        if (json) {
            const auto budget = b.request_budget();
            const char* deduction = b.deduction == cg::DeductionTiming::at_submit       ? "submit"
                                    : b.deduction == cg::DeductionTiming::at_completion ? "completion"
                                                                                        : "unknown";
            out.push_back(boost::json::object{{"id", b.id},
                                              {"service", b.service},
                                              {"url", b.public_url},
                                              {"deduction", deduction},
                                              {"rate_limit", cg::format_rate_limits(budget.windows)},
                                              {"limit_source", cg::to_string(budget.source)},
                                              {"limits", b.limits},
                                              {"tasks", !b.config(std::string(b.public_url)).create_path.empty()}});
        } else {
            std::cout << b.id << "  " << b.service << "  " << b.public_url << "  " << b.limits << "\n";
        }
    }
    if (json) std::cout << boost::json::serialize(out) << "\n";
    return 0;
}

// The limits a run paces its requests to: --rate-limit, else the provider's preset. The presets are the public
// providers' limits: a provider on loopback (the embedded mock, a test server) is paced to --mock-rate-limit
// (embedded mock) or not at all.
std::optional<cg::RequestBudgetConfig> limits_for(const Options& o, bool embedded_mock) {
    if (!o.pacing) return std::nullopt;
    if (o.rate_limit) return o.rate_limit;
    if (!on_loopback(o.base_url)) return cg::builtin_request_budget(o.provider);
    if (!o.mock_rate_limit || !embedded_mock) return std::nullopt;
    cg::RequestBudgetConfig limits;
    limits.windows = {*o.mock_rate_limit};
    limits.source = cg::LimitSource::configured;
    return limits;
}

// The plan for the run `o` describes: one balance read, the request limit the run would pace to, and the
// requests a job makes (a create, and its polls: the task's duration over --poll-interval when given, the
// embedded mock's --mock-polls, else one).
cg::Plan plan_for(const Options& o, const cg::ProviderConfig& config, const cg::SecretString& key, bool embedded_mock,
                  std::string& read_error) {
    asio::io_context ioc;
    cg::Provider provider(cg::HttpClient(ioc.get_executor(), o.http), config, key);
    boost::system::error_code read_ec;
    cg::Credits balance = 0;
    provider.async_balance([&](boost::system::error_code ec, cg::BalanceReply reply) {
        read_ec = ec;
        balance = reply.balance;
    });
    ioc.run();
    cg::PlanInputs inputs;
    if (read_ec) {
        read_error = std::string(cg::error_name(read_ec)) + ": " + read_ec.message();
    } else {
        inputs.balance_known = true;
        inputs.available = balance;
        inputs.balance_age = cg::Duration::zero();
    }
    if (const auto limits = limits_for(o, embedded_mock)) inputs.requests_per_second = cg::paced_rate(*limits);
    cg::PlanRequest request;
    request.jobs = static_cast<std::uint64_t>(o.jobs);
    request.cost = o.cost_range.value_or(cg::JobCost::exactly(o.cost));
    std::string estimate_note;
    if (o.estimate) {
        // The provider's price for one job's create body, in place of --cost (the range widened to hold it).
        boost::system::error_code estimate_ec;
        cg::Credits estimate = 0;
        provider.async_estimate(provider.make_create_body("creditguard plan"),
                                [&](boost::system::error_code ec, cg::CostEstimate e) {
                                    estimate_ec = ec;
                                    estimate = e.credits;
                                });
        ioc.restart();
        ioc.run();
        if (estimate_ec) {
            estimate_note = "the provider gave no estimate (" + std::string(cg::error_name(estimate_ec)) +
                            "): --cost " + std::to_string(o.cost) + " is used";
        } else {
            request.cost.expected = estimate;
            request.cost.low = std::min(request.cost.low, estimate);
            request.cost.high = std::max(request.cost.high, estimate);
            estimate_note = "the provider estimates one job at " + std::to_string(estimate) + " credits";
        }
    }
    request.concurrency = static_cast<std::uint64_t>(o.concurrency);
    request.task_duration = o.task_duration;
    double polls = 1;
    if (o.task_duration && o.runner.poll_initial > cg::Duration::zero())
        polls = std::min(1000.0, std::ceil(std::chrono::duration<double>(*o.task_duration) /
                                           std::chrono::duration<double>(o.runner.poll_initial)));
    else if (embedded_mock)
        polls = o.mock.polls_to_complete;
    request.requests_per_job = 1 + polls;
    cg::Plan plan = cg::make_plan(request, inputs);
    if (!estimate_note.empty()) plan.assumptions.insert(plan.assumptions.begin(), estimate_note);
    return plan;
}

boost::json::object plan_json(const cg::Plan& p) {
    const auto triple = [](cg::Credits low, cg::Credits expected, cg::Credits high) {
        return boost::json::object{{"low", low}, {"expected", expected}, {"high", high}};
    };
    boost::json::array assumptions;
    for (const auto& a : p.assumptions)
        assumptions.emplace_back(a);
    boost::json::object out{
        {"fit", cg::to_string(p.fit)},
        {"jobs", p.request.jobs},
        {"cost", triple(p.request.cost.low, p.request.cost.expected, p.request.cost.high)},
        {"balance_known", p.inputs.balance_known},
        {"available", p.inputs.available},
        {"covered",
         boost::json::object{{"low", p.covered_low}, {"expected", p.covered_expected}, {"high", p.covered_high}}},
        {"needed", boost::json::object{{"expected", p.needed_expected}, {"high", p.needed_high}}},
        {"shortfall", boost::json::object{{"expected", p.shortfall_expected}, {"high", p.shortfall_high}}},
        {"requests_per_job", p.request.requests_per_job},
        {"assumptions", std::move(assumptions)}};
    out["requests_per_second"] =
        p.inputs.requests_per_second ? boost::json::value(*p.inputs.requests_per_second) : boost::json::value(nullptr);
    out["expected_wall_s"] = p.expected_wall
                                 ? boost::json::value(std::chrono::duration<double>(*p.expected_wall).count())
                                 : boost::json::value(nullptr);
    return out;
}

// 0: the run fits; 3: it does not (or may not, at the high cost); 1: the balance could not be read.
int plan_exit_code(const cg::Plan& p) {
    if (p.fit == cg::PlanFit::fits) return 0;
    return p.fit == cg::PlanFit::unknown ? 1 : 3;
}

int print_plan(const Options& o, const cg::Plan& p, const std::string& read_error) {
    if (o.json)
        std::cout << boost::json::serialize(plan_json(p)) << "\n";
    else
        std::cout << cg::describe(p);
    if (!read_error.empty())
        std::cerr << "error: balance_unknown: the balance could not be read (" << read_error << ")\n";
    return plan_exit_code(p);
}

// Before the run: the embedded mock standing in for the account (no --base-url), its provider configuration and
// its key. 0, or the exit code of what is wrong.
int prepare_account(AccountRun& a) {
    Options& o = a.o;
    std::string why;
    if (o.base_url.empty()) {
        // The embedded mock provider: the README's main job runs against it.
        cg::MockConfig mc = o.mock;
        if (const auto* builtin = cg::find_builtin_provider(o.provider))
            mc.v1_flavor = std::string(builtin->mock_v1_flavor);
        a.mock = std::make_unique<cg::MockProvider>(mc);
        o.base_url = a.mock->base_url();
        a.key = mc.key;
        if (!o.poll_interval_set)  // tasks that finish with polls, or after --mock-task-seconds
            o.runner.poll_initial =
                o.mock.finish_unpolled_after ? *o.mock.finish_unpolled_after / 2 : std::chrono::milliseconds(50);
        if (o.mock_rate_limit)
            a.mock->set_rate_limit(static_cast<int>(o.mock_rate_limit->requests),
                                   std::chrono::duration_cast<std::chrono::milliseconds>(o.mock_rate_limit->per));
    }
    a.config = provider_for(o, why);
    if (!a.config) return cg_cli::usage(why);
    if (a.config->create_path.empty() && !o.dry_run)
        return cg_cli::usage("provider '" + o.provider +
                             "' has no task calls configured (balance only): describe them in a --config file");
    if (!a.mock) a.key = key_for(*a.config, o, why);
    if (!a.key) return cg_cli::usage(why);
    if (o.deduct) a.config->deduction = *o.deduct;
    o.runner.poll_max = std::max(o.runner.poll_max, o.runner.poll_initial);
    return 0;
}

// The run's plan: each account's, and for a routed run their credits and request rates together.
int plan_before_run(const std::vector<std::unique_ptr<AccountRun>>& accounts) {
    const Options& o = accounts.front()->o;
    std::string read_error;
    cg::Plan plan;
    try {
        cg::PlanInputs together;
        together.balance_known = true;
        together.requests_per_second = 0.0;
        for (const auto& a : accounts) {
            std::string account_error;
            plan = plan_for(a->o, *a->config, *a->key, a->mock != nullptr, account_error);
            if (!account_error.empty() && read_error.empty()) read_error = a->name + ": " + account_error;
            together.balance_known = together.balance_known && plan.inputs.balance_known;
            together.available = saturating_add(together.available, plan.inputs.available);
            together.balance_age = cg::Duration::zero();
            if (together.requests_per_second && plan.inputs.requests_per_second)
                *together.requests_per_second += *plan.inputs.requests_per_second;
            else
                together.requests_per_second.reset();  // one account unpaced: the sum is unknown
        }
        if (accounts.size() > 1) {
            plan = cg::make_plan(plan.request, together);
            plan.assumptions.insert(
                plan.assumptions.begin(),
                std::to_string(accounts.size()) + " accounts together: their credits and request rates added up");
        }
    } catch (const std::exception& e) {
        return fail("invalid_configuration", e.what());
    }
    if (o.dry_run) return print_plan(o, plan, read_error);
    if (plan.fit != cg::PlanFit::fits) {
        // Nothing was spent: the run would have been refused partway (--require-fit).
        std::cerr << cg::describe(plan);
        if (!read_error.empty()) return fail("balance_unknown", "the balance could not be read (" + read_error + ")");
        (void)fail(cg::to_string(plan.fit), "--require-fit: the credits cannot pay for every job; nothing was started");
        return 3;
    }
    return 0;
}

// Builds the account's provider, request budget, shared ledger and guard on the run's io_context.
void open_account(AccountRun& a, asio::io_context& ioc, const cg::LogHook& log) {
    Options& o = a.o;
    o.http.log = log;
    o.http.log_level = o.log_level;
    if (o.redis) {
        o.redis->log = log;
        o.redis->log_level = o.log_level;
    }
    a.provider =
        std::make_unique<cg::Provider>(cg::HttpClient(ioc.get_executor(), o.http), *a.config, std::move(*a.key));
    cg::GuardConfig gc;
    gc.policy = o.policy;
    gc.deduction = a.config->deduction;
    gc.default_max_wait = o.max_wait;
    gc.low_watermark = o.low_watermark;
    gc.log = log;
    gc.log_level = o.log_level;
    // Every provider request takes a permit.
    const std::optional<cg::RequestBudgetConfig> limits = limits_for(o, a.mock != nullptr);
    if (limits || o.max_running > 0) {
        cg::RequestBudgetConfig bc = limits ? *limits : cg::RequestBudgetConfig{};
        if (!limits) bc.learning.enabled = false;  // only the cap on running tasks
        if (o.max_running > 0) bc.max_running = o.max_running;
        if (o.redis && !bc.windows.empty()) {
            // The processes sharing the account's credits share its request windows too.
            cg::RedisRateGateConfig rg;
            rg.redis = *o.redis;
            rg.account = a.name;
            rg.windows = bc.windows;
            rg.headroom = bc.headroom;
            rg.jitter_margin = bc.jitter_margin;
            auto gate = cg::RedisRateGate::create(ioc.get_executor(), std::move(rg));
            a.rate_gate = gate.get();
            bc.shared = std::move(gate);
        }
        bc.log = log;
        bc.log_level = o.log_level;
        a.budget = std::make_shared<cg::RequestBudget>(ioc.get_executor(), std::move(bc));
    }
    std::shared_ptr<cg::BalanceSource> source = a.provider->balance_source(a.budget);
    if (o.redis) {
        cg::RedisLedgerConfig lc;
        lc.redis = *o.redis;
        lc.account = a.name;
        lc.deduction = a.config->deduction;
        if (o.lease_ttl) lc.lease_ttl = *o.lease_ttl;
        auto ledger = std::make_unique<cg::RedisLedger>(ioc.get_executor(), std::move(lc));
        a.shared_ledger = ledger.get();
        source = ledger->coordinated_source(std::move(source));
        gc.ledger = std::move(ledger);
        gc.refresh.starved_interval = std::chrono::seconds(1);  // shared reads are cheap to reuse
    }
    a.guard = std::make_unique<cg::CreditGuard>(ioc.get_executor(), std::move(source), std::move(gc));
}

// What the --json summary says of one account of a routed run.
boost::json::object account_json(const AccountRun& a) {
    boost::json::object out{{"account", a.name},
                            {"provider", a.o.provider},
                            {"completed", a.completed},
                            {"credits_spent", a.spent},
                            {"failovers_in", a.failovers_in},
                            {"balance_requests", a.stats.refreshes_ok + a.stats.refreshes_failed},
                            {"paused", a.stats.paused},
                            {"unauthorized", a.stats.terminal}};
    if (a.stats.balance_known) out["balance_read"] = a.stats.observed_balance;
    if (a.mock) out["mock_balance_left"] = a.mock->credits();
    return out;
}

// `all`: one Options per account; several route the run over them (--config with repeated --account).
int run_command(std::vector<Options> all) {
    asio::io_context ioc;  // first in, last out: every account's I/O objects go before it
    RunTally tally;
    for (Options& o : all) {
        auto a = std::make_unique<AccountRun>();
        a->name = !o.account.empty() ? o.account : !o.config_account.empty() ? o.config_account : o.provider;
        a->o = std::move(o);
        if (const int bad = prepare_account(*a)) return bad;
        tally.accounts.push_back(std::move(a));
    }
    Options& o = tally.accounts.front()->o;  // what every account shares: jobs, cost, concurrency, output
    if (o.dry_run || o.require_fit) {
        if (const int stop = plan_before_run(tally.accounts); stop != 0 || o.dry_run) return stop;
    }

    const auto started = std::chrono::steady_clock::now();
    tally.jobs = o.jobs;
    // --log-level: every component's events, one stderr line each.
    cg::LogHook to_stderr;
    if (o.log_level != cg::LogLevel::off)
        to_stderr = [](const cg::LogEvent& event) { std::cerr << "creditguard: " << cg::format_log(event) << "\n"; };
    try {
        std::vector<cg::RouteAccount> route;
        for (std::size_t i = 0; i < tally.accounts.size(); ++i) {
            AccountRun& a = *tally.accounts[i];
            open_account(a, ioc, to_stderr);
            cg::RouteAccount r;
            r.name = a.name;
            r.provider = a.o.provider;
            r.guard = a.guard.get();
            r.budget = a.budget;
            r.priority = static_cast<int>(i);  // the order the accounts were given in
            route.push_back(std::move(r));
            tally.providers.push_back(a.provider.get());
        }
        tally.router = std::make_unique<cg::Router>(std::move(route));
        std::optional<cg_cli::MetricsServer> metrics;
        if (o.metrics_port) {
            metrics.emplace(ioc.get_executor(), *o.metrics_port, [&tally] { return render_metrics(tally); });
            tally.metrics = &*metrics;
            std::fprintf(stderr, "creditguard: metrics at http://127.0.0.1:%u/metrics\n", metrics->port());
        }
        tally.workers_left = std::max(1, std::min(o.concurrency, o.jobs));
        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        tally.signals = &signals;
        signals.async_wait([&tally](const boost::system::error_code& e, int n) { on_signal(tally, e, n); });
        if (o.jobs == 0) finish(tally);
        for (int i = 0; i < tally.workers_left && o.jobs > 0; ++i)
            tally.worker_stops.push_back(std::make_unique<asio::cancellation_signal>());
        if (o.jobs > 0) asio::co_spawn(ioc, start_workers(o, tally), asio::detached);
        if (!o.json && isatty(STDERR_FILENO) && o.jobs > 0) asio::co_spawn(ioc, progress(tally), asio::detached);
        ioc.run();
        for (const auto& a : tally.accounts)
            a->provider->http().cancel();
    } catch (const std::exception& e) {
        return fail("invalid_configuration", e.what());
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const cg::GuardStats stats = merged_stats(tally);
    const bool routed = tally.accounts.size() > 1;
    const AccountRun& only = *tally.accounts.front();  // the account, when the run does not route
    const auto balance_requests = stats.refreshes_ok + stats.refreshes_failed;
    if (const int not_started = tally.jobs - tally.next; not_started > 0) {  // a stop came first
        tally.cancelled += not_started;
        tally.outcomes[{cg::JobStatus::cancelled, make_error_code(cg::errc::cancelled)}] += not_started;
    }
    const auto causes = causes_of(tally, stats);
    cg::Credits mock_left = 0;
    bool any_mock = false;
    for (const auto& a : tally.accounts) {
        if (!a->mock) continue;
        any_mock = true;
        mock_left = saturating_add(mock_left, a->mock->credits());
    }

    if (o.json) {
        boost::json::object out{{"provider", routed ? std::string("*") : o.provider},
                                {"jobs", tally.jobs},
                                {"completed", tally.completed},
                                {"rejected", tally.rejected},
                                {"failed", tally.failed},
                                {"ambiguous", tally.ambiguous},
                                {"cancelled", tally.cancelled},
                                {"credits_spent", tally.spent},
                                {"provider_insufficient", tally.insufficient},
                                {"rate_limited", tally.rate_limited},
                                {"maintenance_waits", tally.maintenance},
                                {"balance_requests", balance_requests},
                                {"elapsed_s", elapsed}};
        // Pacing: requests that waited for a permit, the time jobs spent waiting for permits and for
        // credits (separately), every rate-limited answer (balance reads too) and what the budget learned.
        out["credit_wait_s"] = std::chrono::duration<double>(tally.credit_wait).count();
        out["permit_wait_s"] = std::chrono::duration<double>(tally.permit_wait).count();
        if (const auto& b = only.budget_stats; b && !routed) {
            out["paced_waits"] = b->total_paced();
            out["requests"] = b->total_granted();
            out["rate_limited"] = b->total_rate_limited();
            out["rate_limit"] = limits_text(*b);
            out["limit_source"] = cg::to_string(b->source);
            if (b->learned_rate) out["learned_limit"] = *b->learned_rate;  // requests per second
            if (b->header_window) out["header_limit"] = cg::format_rate_limits({*b->header_window});
            if (b->max_running > 0) out["max_running"] = b->max_running;
            if (only.rate_gate != nullptr) {
                out["shared_rate_waits"] = b->shared_waits;
                out["shared_rate_errors"] = b->shared_errors;
            }
        } else if (!routed) {
            out["paced_waits"] = 0;
            out["rate_limit"] = "off";
        } else {
            std::uint64_t paced = 0;
            for (const auto& a : tally.accounts)
                if (a->budget_stats) paced += a->budget_stats->total_paced();
            out["paced_waits"] = paced;
        }
        boost::json::object errors;
        for (const auto& [kind, cause] : causes)
            errors[kind] = cause.jobs;
        out["errors"] = std::move(errors);
        if (stats.last_refresh_error) out["balance_read_error"] = kind_of(stats.last_refresh_error);
        // How every reservation ended: granted = released + settled + refunded + abandoned + live.
        out["reservations"] = boost::json::object{{"granted", stats.granted},       {"committed", stats.committed},
                                                  {"released", stats.released},     {"settled", stats.settled},
                                                  {"refunded", stats.refunded},     {"abandoned", stats.abandoned},
                                                  {"live", stats.live_reservations}};
        out["unresolved_credits"] = stats.unresolved;
        out["unexplained_spend"] = stats.unexplained_spend;
        out["drift_margin"] = stats.drift_margin;
        out["server_errors"] = stats.server_error_signals;
        out["breaker_trips"] = stats.breaker_trips;
        if (any_mock) out["mock_balance_left"] = mock_left;
        out["ledger"] = o.redis ? "redis" : "local";
        if (tally.stop_signal != 0) {
            out["interrupted_by"] = signal_name(tally.stop_signal);
            out["stopped_polling"] = tally.stopped_polling;
        }
        if (only.ledger_stats && !routed) {
            out["ledger_provider_reads"] = only.ledger_stats->provider_reads;
            out["ledger_shared_reads"] = only.ledger_stats->shared_reads;
            out["ledger_lease_opens"] = only.ledger_stats->lease_opens;
            out["ledger_batches"] = only.ledger_stats->batches;
        }
        if (routed) {
            out["failovers"] = tally.failovers;
            boost::json::array accounts;
            for (const auto& a : tally.accounts)
                accounts.emplace_back(account_json(*a));
            out["accounts"] = std::move(accounts);
        }
        std::cout << boost::json::serialize(out) << "\n";
    } else {
        std::cout << "jobs " << tally.jobs << ": " << tally.completed << " completed, " << tally.rejected
                  << " rejected by the guard, " << tally.failed << " failed, " << tally.ambiguous << " ambiguous, "
                  << tally.cancelled << " cancelled\n"
                  << "credits spent " << tally.spent << ", balance requests " << balance_requests
                  << ", provider said insufficient " << tally.insufficient << " times, rate limited "
                  << tally.rate_limited << ", maintenance " << tally.maintenance << "\n";
        for (const auto& a : tally.accounts) {
            if (routed)
                std::cout << "account " << a->name << " (" << a->o.provider << "): " << a->completed
                          << " completed, credits spent " << a->spent << ", " << a->failovers_in
                          << " came after a refusal elsewhere" << (a->stats.terminal ? ", key refused" : "") << "\n";
            if (const auto& b = a->budget_stats) {
                std::cout << (routed ? "  pacing " : "pacing ") << limits_text(*b) << " (" << cg::to_string(b->source)
                          << "): " << b->total_granted() << " requests, " << b->total_paced()
                          << " waited for a permit, " << b->total_rate_limited() << " answered rate limited";
                if (b->learned_rate) std::cout << ", learned " << *b->learned_rate << " requests/s";
                std::cout << "\n";
            }
            if (a->mock)
                std::cout << (routed ? "  " : "") << "mock account: " << a->mock->credits() << " credits left\n";
        }
        if (routed) std::cout << "failovers " << tally.failovers << "\n";
        std::printf("elapsed %.2f s\n", elapsed);
        std::fflush(stdout);
    }
    report_causes(causes, o, stats, tally);
    for (const auto& a : tally.accounts)
        if (a->mock) a->mock->stop();
    // Interrupted: the shell's convention for a process ended by the signal (130 SIGINT, 143 SIGTERM).
    return tally.stop_signal != 0 ? 128 + tally.stop_signal : exit_code_of(causes);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return cg_cli::usage("missing command");
    const std::string command = argv[1];
    if (command == "--version" && argc == 2) {
        std::cout << "creditguard " << CREDITGUARD_VERSION_STRING << "\n";
        return 0;
    }
    if (command == "mock") return cg_cli::mock_command(argc - 1, argv + 1);
    if (command == "providers") return providers_command(argc - 1, argv + 1);
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h" || (i == 1 && arg == "help")) return cg_cli::help();
    }
    // Several --account: a run routed over those accounts of the --config file, each parsed as if it were the
    // only one named.
    const std::vector<std::string> accounts = cg_cli::option_values(argc - 1, argv + 1, "--account");
    if (accounts.size() > 1 && (command == "run" || command == "plan")) {
        if (cg_cli::option_values(argc - 1, argv + 1, "--config").empty())
            return cg_cli::usage("several --account need a --config file that describes them under \"accounts\"");
        std::vector<Options> all;
        for (const std::string& name : accounts) {
            std::vector<std::string> args = cg_cli::without_option(argc - 1, argv + 1, "--account");
            args.push_back("--account");
            args.push_back(name);
            std::vector<char*> view;
            for (std::string& a : args)
                view.push_back(a.data());
            Options o;
            std::string why;
            if (!cg_cli::parse(static_cast<int>(view.size()), view.data(), o, why)) return cg_cli::usage(why);
            if (o.config_account.empty())
                return cg_cli::usage("several --account need a --config file that describes them under \"accounts\"");
            for (const Options& earlier : all)
                if (earlier.config_account == o.config_account)
                    return cg_cli::usage("--account " + name + " is given twice");
            if (command == "plan") o.dry_run = true;
            all.push_back(std::move(o));
        }
        return run_command(std::move(all));
    }
    Options o;
    std::string why;
    if (!cg_cli::parse(argc - 1, argv + 1, o, why)) return cg_cli::usage(why);
    if (command == "balance") {
        if (o.provider.empty()) return cg_cli::usage("balance needs --provider");
        return balance_command(o);
    }
    if (command == "run" || command == "plan") {
        if (o.provider.empty()) o.provider = std::string(cg::builtin_providers().front().id);
        if (command == "plan") o.dry_run = true;  // `plan` is `run --dry-run`
        std::vector<Options> one;
        one.push_back(std::move(o));
        return run_command(std::move(one));
    }
    return cg_cli::usage("unknown command '" + command + "'");
}
