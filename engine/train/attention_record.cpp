#include "engine/train/attention_record.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ll {

std::string attention_event_fields(const std::string& requested, AttentionKernel kernel,
                                   const std::string& checkpoint_kernel) {
  const auto quoted = [](const std::string& s) { return nlohmann::json(s).dump(); };
  std::string out = fmt::format("\"requested\": {}, \"kernel\": {}", quoted(requested),
                                quoted(std::string(attention_kernel_name(kernel))));
  if (!checkpoint_kernel.empty())
    out += fmt::format(", \"checkpoint_kernel\": {}", quoted(checkpoint_kernel));
  return out;
}

std::string attention_resume_note(const std::string& checkpoint_kernel, AttentionKernel kernel) {
  const std::string_view now = attention_kernel_name(kernel);
  if (checkpoint_kernel.empty() || checkpoint_kernel == now) return "";
  return fmt::format(
      "the checkpoint was trained with attention kernel {}, this run uses {} "
      "(allowed: the families compute the same attention to rounding; losses may "
      "differ in the last digits)",
      checkpoint_kernel, now);
}

}  // namespace ll
