// ProviderConfig from and to JSON (config files).
#include "creditguard/providers/provider_json.hpp"

#include <boost/json/object.hpp>

#include <cctype>
#include <charconv>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string_view>

namespace creditguard {

namespace json = boost::json;

namespace {

constexpr Outcome kOutcomes[] = {
    Outcome::ok,
    Outcome::insufficient_credits,
    Outcome::rate_limited,
    Outcome::maintenance,
    Outcome::unauthorized,
    Outcome::invalid_request,
    Outcome::not_found,
    Outcome::server_error,
    Outcome::generation_failed,
    Outcome::feature_disabled,
    Outcome::malformed,
};
constexpr TaskState kStates[] = {TaskState::pending, TaskState::running, TaskState::success, TaskState::failed,
                                 TaskState::unknown};

template <class Values>
std::string names_of(const Values& values) {
    std::string out;
    for (auto v : values) {
        if (!out.empty()) out += ", ";
        out += to_string(v);
    }
    return out;
}

/// Reads one object's fields, each by a handler; remembers the first problem with the field's path.
class Reader {
public:
    Reader(std::string& why) : why_(why) {}

    bool fail(std::string_view field, std::string_view problem) {
        if (ok_) why_ = std::string(field) + ": " + std::string(problem);
        ok_ = false;
        return false;
    }
    [[nodiscard]] bool ok() const noexcept { return ok_; }

    bool string(std::string_view field, const json::value& v, std::string& out) {
        if (!v.is_string()) return fail(field, "expected a string");
        out = std::string(v.get_string());
        return true;
    }
    bool path(std::string_view field, const json::value& v, std::string& out, bool may_be_empty) {
        if (!string(field, v, out)) return false;
        if (out.empty() ? !may_be_empty : out.front() != '/') return fail(field, "a path starts with '/'");
        for (const char c : out)
            if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '?' || c == '#')
                return fail(field, "a path has no spaces, control characters, '?' or '#'");
        return true;
    }
    bool pointer(std::string_view field, const json::value& v, std::string& out) {
        if (!string(field, v, out)) return false;
        if (!out.empty() && out.front() != '/') return fail(field, "a JSON pointer is empty or starts with '/'");
        return true;
    }
    bool pointers(std::string_view field, const json::value& v, std::vector<std::string>& out) {
        if (!v.is_array()) return fail(field, "expected an array of JSON pointers");
        out.clear();
        for (std::size_t i = 0; i < v.get_array().size(); ++i) {
            std::string p;
            if (!pointer(std::string(field) + "[" + std::to_string(i) + "]", v.get_array()[i], p)) return false;
            out.push_back(std::move(p));
        }
        return true;
    }
    bool integer(std::string_view field, const json::value& v, int& out) {
        if (!v.is_int64() || v.get_int64() < std::numeric_limits<int>::min() ||
            v.get_int64() > std::numeric_limits<int>::max())
            return fail(field, "expected a whole number");
        out = static_cast<int>(v.get_int64());
        return true;
    }
    bool boolean(std::string_view field, const json::value& v, bool& out) {
        if (!v.is_bool()) return fail(field, "expected true or false");
        out = v.get_bool();
        return true;
    }
    bool outcome(std::string_view field, const json::value& v, Outcome& out) {
        return named(field, v, kOutcomes, "outcome", out);
    }
    bool state(std::string_view field, const json::value& v, TaskState& out) {
        return named(field, v, kStates, "task state", out);
    }

private:
    /// One of `values`, by its to_string name.
    template <class Values, class T>
    bool named(std::string_view field, const json::value& v, const Values& values, std::string_view what, T& out) {
        for (const T value : values) {
            if (v.is_string() && v.get_string() == to_string(value)) {
                out = value;
                return true;
            }
        }
        return fail(field, "unknown " + std::string(what) + " (" + names_of(values) + ")");
    }

    std::string& why_;
    bool ok_ = true;
};

bool read_auth(Reader& r, const json::value& v, ProviderConfig& c) {
    if (v.is_string() && v.get_string() == "bearer") {
        c.auth_style = AuthStyle::bearer;
        return true;
    }
    if (v.is_string() && v.get_string() == "none") {
        c.auth_style = AuthStyle::none;
        return true;
    }
    if (v.is_object() && v.get_object().size() == 1 && v.get_object().contains("header")) {
        if (!r.string("auth.header", v.get_object().at("header"), c.auth_header)) return false;
        for (const char ch : c.auth_header)
            if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_'))
                return r.fail("auth.header", "a header name is letters, digits, '-' and '_'");
        if (c.auth_header.empty()) return r.fail("auth.header", "a header name is not empty");
        c.auth_style = AuthStyle::header;
        return true;
    }
    return r.fail("auth", "expected \"bearer\", \"none\" or {\"header\": NAME}");
}

bool read_codes(Reader& r, const json::value& v, ProviderConfig& c) {
    if (!v.is_object()) return r.fail("codes", "expected an object of code: outcome");
    c.codes.clear();
    for (const auto& kv : v.get_object()) {
        const std::string field = "codes.\"" + std::string(kv.key()) + "\"";
        CodeRule rule;
        const std::string_view key = kv.key();
        const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), rule.code);
        if (key.empty() || ec != std::errc{} || end != key.data() + key.size())
            return r.fail(field, "a code is a whole number");
        if (kv.value().is_object()) {
            const json::object& o = kv.value().get_object();
            for (const auto& f : o)
                if (f.key() != "outcome" && f.key() != "message_decides")
                    return r.fail(field + "." + std::string(f.key()), "unknown field (outcome, message_decides)");
            if (!o.contains("outcome")) return r.fail(field + ".outcome", "missing");
            if (!r.outcome(field + ".outcome", o.at("outcome"), rule.outcome)) return false;
            if (o.contains("message_decides") &&
                !r.boolean(field + ".message_decides", o.at("message_decides"), rule.message_decides))
                return false;
        } else if (!r.outcome(field, kv.value(), rule.outcome)) {
            return false;
        }
        c.codes.push_back(rule);
    }
    return true;
}

bool read_statuses(Reader& r, const json::value& v, ProviderConfig& c) {
    if (!v.is_object()) return r.fail("statuses", "expected an object of provider status: task state");
    c.statuses.clear();
    for (const auto& kv : v.get_object()) {
        StatusRule rule;
        rule.value = std::string(kv.key());
        if (!r.state("statuses.\"" + rule.value + "\"", kv.value(), rule.state)) return false;
        c.statuses.push_back(std::move(rule));
    }
    return true;
}

const char* deduction_name(DeductionTiming d) {
    switch (d) {
    case DeductionTiming::at_submit: return "submit";
    case DeductionTiming::at_completion: return "completion";
    case DeductionTiming::unknown: break;
    }
    return "unknown";
}

bool read_deduction(Reader& r, const json::value& v, DeductionTiming& out) {
    for (const DeductionTiming d :
         {DeductionTiming::at_submit, DeductionTiming::at_completion, DeductionTiming::unknown}) {
        if (v.is_string() && v.get_string() == deduction_name(d)) {
            out = d;
            return true;
        }
    }
    return r.fail("deduction", "expected \"submit\", \"completion\" or \"unknown\"");
}

json::array to_array(const std::vector<std::string>& values) {
    json::array out;
    for (const auto& v : values)
        out.emplace_back(v);
    return out;
}

}  // namespace

boost::system::result<ProviderConfig> provider_config_from_json(const json::value& v, std::string& why,
                                                                ProviderConfig c) {
    Reader r(why);
    if (!v.is_object()) {
        r.fail("provider", "expected an object");
        return make_error_code(errc::invalid_configuration);
    }
    using Field = std::function<bool(const json::value&)>;
    const std::pair<std::string_view, Field> fields[] = {
        {"id", [&](const json::value& x) { return r.string("id", x, c.id); }},
        {"base_url", [&](const json::value& x) { return r.string("base_url", x, c.base_url); }},
        {"auth", [&](const json::value& x) { return read_auth(r, x, c); }},
        {"balance_path", [&](const json::value& x) { return r.path("balance_path", x, c.balance_path, false); }},
        {"balance_pointer", [&](const json::value& x) { return r.pointer("balance_pointer", x, c.balance_pointer); }},
        {"balance_add_pointers",
         [&](const json::value& x) { return r.pointers("balance_add_pointers", x, c.balance_add_pointers); }},
        {"code_pointer", [&](const json::value& x) { return r.pointer("code_pointer", x, c.code_pointer); }},
        {"message_pointers",
         [&](const json::value& x) { return r.pointers("message_pointers", x, c.message_pointers); }},
        {"success_code", [&](const json::value& x) { return r.integer("success_code", x, c.success_code); }},
        {"codes", [&](const json::value& x) { return read_codes(r, x, c); }},
        {"create_path", [&](const json::value& x) { return r.path("create_path", x, c.create_path, true); }},
        {"task_id_pointers",
         [&](const json::value& x) { return r.pointers("task_id_pointers", x, c.task_id_pointers); }},
        {"create_template",
         [&](const json::value& x) {
             if (!x.is_object()) return r.fail("create_template", "expected an object");
             c.create_template = x;
             return true;
         }},
        {"prompt_pointer", [&](const json::value& x) { return r.pointer("prompt_pointer", x, c.prompt_pointer); }},
        {"status_path", [&](const json::value& x) { return r.path("status_path", x, c.status_path, true); }},
        {"status_query", [&](const json::value& x) { return r.string("status_query", x, c.status_query); }},
        {"status_pointer", [&](const json::value& x) { return r.pointer("status_pointer", x, c.status_pointer); }},
        {"statuses", [&](const json::value& x) { return read_statuses(r, x, c); }},
        {"actual_credits_pointer",
         [&](const json::value& x) { return r.pointer("actual_credits_pointer", x, c.actual_credits_pointer); }},
        {"fail_reason_pointer",
         [&](const json::value& x) { return r.pointer("fail_reason_pointer", x, c.fail_reason_pointer); }},
        {"estimate_path", [&](const json::value& x) { return r.path("estimate_path", x, c.estimate_path, true); }},
        {"estimate_pointer",
         [&](const json::value& x) { return r.pointer("estimate_pointer", x, c.estimate_pointer); }},
        {"deduction", [&](const json::value& x) { return read_deduction(r, x, c.deduction); }},
    };
    for (const auto& kv : v.get_object()) {
        bool known = false;
        for (const auto& [name, read] : fields) {
            if (kv.key() != name) continue;
            known = true;
            if (!read(kv.value())) return make_error_code(errc::invalid_configuration);
        }
        if (!known) {
            std::string names;
            for (const auto& [name, read] : fields)
                names += (names.empty() ? "" : ", ") + std::string(name);
            r.fail(kv.key(), "unknown field (" + names + ")");
            return make_error_code(errc::invalid_configuration);
        }
    }
    // Tasks half described are a mistake worth naming here, not at the first create.
    if (!c.create_path.empty() && (c.task_id_pointers.empty() || c.status_path.empty() || c.status_pointer.empty())) {
        r.fail("create_path", "a create path needs task_id_pointers, status_path and status_pointer");
        return make_error_code(errc::invalid_configuration);
    }
    return c;
}

json::object provider_config_to_json(const ProviderConfig& c) {
    json::object out;
    out["id"] = c.id;
    out["base_url"] = c.base_url;
    switch (c.auth_style) {
    case AuthStyle::bearer: out["auth"] = "bearer"; break;
    case AuthStyle::none: out["auth"] = "none"; break;
    case AuthStyle::header: out["auth"] = json::object{{"header", c.auth_header}}; break;
    }
    out["balance_path"] = c.balance_path;
    out["balance_pointer"] = c.balance_pointer;
    out["balance_add_pointers"] = to_array(c.balance_add_pointers);
    out["code_pointer"] = c.code_pointer;
    out["message_pointers"] = to_array(c.message_pointers);
    out["success_code"] = c.success_code;
    json::object codes;
    for (const CodeRule& rule : c.codes) {
        const std::string key = std::to_string(rule.code);
        if (rule.message_decides)
            codes[key] = json::object{{"outcome", to_string(rule.outcome)}, {"message_decides", true}};
        else
            codes[key] = to_string(rule.outcome);
    }
    out["codes"] = std::move(codes);
    out["create_path"] = c.create_path;
    out["task_id_pointers"] = to_array(c.task_id_pointers);
    out["create_template"] = c.create_template.is_object() ? c.create_template : json::value(json::object{});
    out["prompt_pointer"] = c.prompt_pointer;
    out["status_path"] = c.status_path;
    out["status_query"] = c.status_query;
    out["status_pointer"] = c.status_pointer;
    json::object statuses;
    for (const StatusRule& rule : c.statuses)
        statuses[rule.value] = to_string(rule.state);
    out["statuses"] = std::move(statuses);
    out["actual_credits_pointer"] = c.actual_credits_pointer;
    out["fail_reason_pointer"] = c.fail_reason_pointer;
    out["estimate_path"] = c.estimate_path;
    out["estimate_pointer"] = c.estimate_pointer;
    out["deduction"] = deduction_name(c.deduction);
    return out;
}

}  // namespace creditguard
