#include "device/telemetry.hh"

#include <rte_telemetry.h>

#include <map>
#include <string>
#include <vector>
#include <sstream>

namespace shunt {

namespace {
StatsSnapshot* g_snapshot = nullptr;

// Telemetry names take letters, digits and '_' (group and counter names do).
std::string tel_name(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  return out;
}

int stats_cmd(const char*, const char*, rte_tel_data* d) {
  std::string text;
  {
    std::lock_guard<std::mutex> g(g_snapshot->mu);
    text = g_snapshot->text;
  }
  std::map<std::string, std::vector<std::pair<std::string, uint64_t>>> groups;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    size_t dot = line.find('.'), space = line.find(' ');
    if (dot == std::string::npos || space == std::string::npos || dot > space) continue;
    std::string value = line.substr(space + 1);
    if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) continue;
    groups[tel_name(line.substr(0, dot))].emplace_back(tel_name(line.substr(dot + 1, space - dot - 1)),
                                                      std::stoull(value));
  }
  rte_tel_data_start_dict(d);
  for (auto& [group, counters] : groups) {
    rte_tel_data* g = rte_tel_data_alloc();
    if (g == nullptr) return -ENOMEM;
    rte_tel_data_start_dict(g);
    for (auto& [name, v] : counters) rte_tel_data_add_dict_u64(g, name.c_str(), v);
    rte_tel_data_add_dict_container(d, group.c_str(), g, 0);
  }
  return 0;
}
}  // namespace

void register_telemetry(StatsSnapshot* snapshot) {
  g_snapshot = snapshot;
  rte_telemetry_register_cmd("/shunt/stats", stats_cmd,
                             "shuntd counters by group (shunt stat -a). Takes no parameters");
}

}  // namespace shunt
