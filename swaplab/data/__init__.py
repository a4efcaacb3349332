"""swaplab.data: the catalog of public sample data sets and the fetcher that downloads them.

For users without the workplace's ``shared/data`` folder: ``swaplab data list | fetch | path``.
Nothing here reads images or builds datasets for training; that lives in ``swaplab.facesets``.
"""

from swaplab.data.catalog import DATASETS, DatasetFile, DatasetSpec, register_dataset
from swaplab.data.fetch import (
    ArchiveError,
    ChecksumMismatchError,
    DataFetchError,
    DestinationExistsError,
    DownloadError,
    IncompleteDownloadError,
    UnsafeArchiveError,
    UnverifiedDownloadError,
    data_root,
    dataset_status,
    describe_datasets,
    fetch,
    get_dataset,
    list_datasets,
    locate_data_root,
    rewrite_url,
    safe_extract,
    verify_file,
)

__all__ = [
    "DATASETS",
    "ArchiveError",
    "ChecksumMismatchError",
    "DataFetchError",
    "DatasetFile",
    "DatasetSpec",
    "DestinationExistsError",
    "DownloadError",
    "IncompleteDownloadError",
    "UnsafeArchiveError",
    "UnverifiedDownloadError",
    "data_root",
    "dataset_status",
    "describe_datasets",
    "fetch",
    "get_dataset",
    "list_datasets",
    "locate_data_root",
    "register_dataset",
    "rewrite_url",
    "safe_extract",
    "verify_file",
]
