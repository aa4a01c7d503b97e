// A torch.save (>= 1.6) zip checkpoint: its layout checked, data.pkl unpickled by the restricted
// unpickler, and storages read from `data/<key>` only when a tensor that uses them is
// materialised, so weights nobody asked for (optimizer state) are never read.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/pytorch/pickle_value.h"
#include "io/pytorch/unpickler.h"
#include "io/pytorch/zip_archive.h"

namespace modex::pytorch {

class TorchArchive {
 public:
  // Throws Error for archives that are not torch.save checkpoints (TorchScript archives are
  // kUnsupported with a hint) and for anything the unpickler refuses.
  explicit TorchArchive(std::unique_ptr<ZipArchive> zip);

  const pickle::Value* root() const { return pickled_.root; }
  // The folder every entry sits in, with its trailing slash ("archive/", "<file stem>/").
  const std::string& prefix() const { return prefix_; }
  bool big_endian() const { return big_endian_; }

  struct TensorRequest {
    std::string name;  // for error messages
    const pickle::TensorRef* ref = nullptr;
  };
  // Contiguous little-endian tensors with their stored dtypes. Every storage the requests use is
  // read once into its own buffer (tied weights share it); tensors view it where the layout
  // allows and are strided copies otherwise. From an archive in a file, storages are read into
  // memory, and their size and CRC checked, only when first accessed (Buffer::allocate_lazy), so
  // a damaged one throws then; the tensors keep the archive open until they are read.
  std::vector<Tensor> materialize(const std::vector<TensorRequest>& requests);

 private:
  struct StorageSlot {
    const ZipArchive::Entry* entry = nullptr;
    std::shared_ptr<Buffer> bytes;
    size_t swapped_itemsize = 0;  // element size the big-endian bytes were swapped with
  };

  std::shared_ptr<const ZipArchive> zip_;
  std::string prefix_;
  bool big_endian_ = false;
  pickle::Unpickled pickled_;
};

}  // namespace modex::pytorch
