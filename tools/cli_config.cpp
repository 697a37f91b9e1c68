// --config FILE: accounts described in JSON. The command line overrides what the file says.
//
//   {"provider": "sunoapi" | {custom provider: see creditguard/providers/provider_json.hpp, or
//                             {"preset": "sunoapi", ...fields to change}},
//    "base_url": "https://...", "api_key_env": "MY_SUNO_KEY" | "api_key_file": "/run/secrets/suno",
//    "deduction": "submit" | "completion" | "unknown", "rate_limit": "20/10s" | "unknown" | "off",
//    "max_running": 10, "ledger": "redis://host:6379/0"}
//
// or several: {"accounts": {"NAME": {...}, ...}}, one chosen with --account NAME (needed when there are
// several; NAME also names the shared ledger's account). A key is never read from the file itself.
#include "cli_options.hpp"

#include <creditguard/providers/provider_json.hpp>
#include <creditguard/providers/registry.hpp>

#include <boost/json/parse.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace cg_cli {
namespace {

namespace cg = creditguard;
namespace json = boost::json;

constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;

bool read_file(const std::string& path, std::string& text, std::string& why) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::is_regular_file(status)) {
        why = "--config " + path + ": not a readable file";
        return false;
    }
    if (std::filesystem::file_size(path, ec) > kMaxConfigBytes || ec) {
        why = "--config " + path + ": larger than 1 MiB";
        return false;
    }
    std::ifstream in(path, std::ios::binary);
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (!in) {
        why = "--config " + path + ": cannot be read";
        return false;
    }
    text = buffer.str();
    return true;
}

// Picks the account: the top-level object, or one of "accounts" (by name, or the only one).
const json::object* select_account(const json::object& root, const std::string& wanted, std::string& name,
                                   std::string& why) {
    if (!root.contains("accounts")) {
        name.clear();
        return &root;
    }
    if (root.size() != 1) {
        why = "beside \"accounts\" the file holds nothing: each account has its own fields";
        return nullptr;
    }
    const json::value& all = root.at("accounts");
    if (!all.is_object() || all.get_object().empty()) {
        why = "accounts: expected an object of NAME: account";
        return nullptr;
    }
    const json::object& accounts = all.get_object();
    if (wanted.empty() && accounts.size() > 1) {
        why = "accounts: several accounts; choose one with --account NAME";
        return nullptr;
    }
    const auto it = wanted.empty() ? accounts.begin() : accounts.find(wanted);
    if (it == accounts.end()) {
        why = "accounts: no account named '" + wanted + "'";
        return nullptr;
    }
    name = std::string(it->key());
    if (!it->value().is_object()) {
        why = "accounts." + name + ": expected an object";
        return nullptr;
    }
    return &it->value().get_object();
}

bool string_field(const json::value& v, std::string_view field, std::string& out, std::string& why) {
    if (!v.is_string() || v.get_string().empty()) {
        why = std::string(field) + ": expected a string that is not empty";
        return false;
    }
    out = std::string(v.get_string());
    return true;
}

// "provider": a built-in id, or an object (a custom provider, or {"preset": ID, ...changes}).
bool read_provider(const json::value& v, Options& o, std::string& why) {
    if (v.is_string()) {
        o.provider = std::string(v.get_string());
        if (!cg::find_builtin_provider(o.provider)) {
            why = "provider: unknown built-in provider '" + o.provider + "' (" + cg::builtin_provider_ids() +
                  "); describe another as an object";
            return false;
        }
        return true;
    }
    if (!v.is_object()) {
        why = "provider: expected a built-in id or an object";
        return false;
    }
    json::object fields = v.get_object();
    cg::ProviderConfig base;
    if (const auto preset = fields.find("preset"); preset != fields.end()) {
        const auto* builtin =
            preset->value().is_string() ? cg::find_builtin_provider(preset->value().get_string()) : nullptr;
        if (!builtin) {
            why = "provider.preset: expected a built-in id (" + cg::builtin_provider_ids() + ")";
            return false;
        }
        base = *cg::builtin_provider(builtin->id);
        fields.erase(preset);
    }
    std::string field_why;
    auto config = cg::provider_config_from_json(fields, field_why, std::move(base));
    if (!config) {
        why = "provider." + field_why;
        return false;
    }
    if (config->id.empty()) {
        why = "provider.id: missing";
        return false;
    }
    o.provider = config->id;
    o.custom_provider = std::move(*config);
    return true;
}

// The account fields that are also options.
const char* option_for(std::string_view field) {
    if (field == "base_url") return "--base-url";
    if (field == "deduction") return "--deduct";
    if (field == "rate_limit") return "--rate-limit";
    if (field == "ledger") return "--ledger";
    return nullptr;
}

bool read_account(const json::object& account, const std::string& prefix, Options& o, std::string& why) {
    for (const auto& kv : account) {
        const std::string_view key = kv.key();
        const json::value& v = kv.value();
        const std::string field = prefix + std::string(key);
        std::string text;
        bool ok = true;
        if (key == "provider") {
            ok = read_provider(v, o, why);
            if (!ok) why = prefix + why;
        } else if (key == "api_key" || key == "key" || key == "password") {
            why = field +
                  ": keys are never read from the config file; name a variable (api_key_env) or a key "
                  "file (api_key_file)";
            return false;
        } else if (key == "api_key_env") {
            ok = string_field(v, field, o.api_key_env, why);
        } else if (key == "api_key_file") {
            ok = string_field(v, field, o.api_key_file, why);
        } else if (const char* option = option_for(key)) {
            // The same values as the option, checked by the same code ("completion" is --deduct's "complete").
            ok = string_field(v, field, text, why);
            if (ok && key == "deduction" && text == "completion") text = "complete";
            if (ok && !apply_option(option, text, o, why)) {
                why = field + ": " + why;
                ok = false;
            }
        } else if (key == "max_running") {
            if (!v.is_int64() || v.get_int64() < 1 || v.get_int64() > 100'000) {
                why = field + ": expected a whole number from 1 to 100000";
                return false;
            }
            o.max_running = static_cast<std::size_t>(v.get_int64());
        } else {
            why = field +
                  ": unknown field (provider, base_url, api_key_env, api_key_file, deduction, rate_limit, "
                  "max_running, ledger)";
            return false;
        }
        if (!ok) return false;
    }
    if (!o.api_key_env.empty() && !o.api_key_file.empty()) {
        why = prefix + "api_key_env, api_key_file: give one of them";
        return false;
    }
    return true;
}

}  // namespace

bool apply_config_file(const std::string& path, const std::string& account, Options& o, std::string& why) {
    std::string text;
    if (!read_file(path, text, why)) return false;
    boost::system::error_code ec;
    const json::value root = json::parse(text, ec);
    if (ec || !root.is_object()) {
        why = "--config " + path + ": not a JSON object" + (ec ? " (" + ec.message() + ")" : std::string());
        return false;
    }
    std::string name;
    const json::object* selected = select_account(root.get_object(), account, name, why);
    std::string field_why;
    if (!selected || !read_account(*selected, name.empty() ? "" : "accounts." + name + ".", o, field_why)) {
        why = "--config " + path + ": " + (selected ? field_why : why);
        return false;
    }
    o.config_account = name;
    return true;
}

}  // namespace cg_cli
