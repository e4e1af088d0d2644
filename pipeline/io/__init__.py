"""CT input/output: scans (mhd, NIfTI, NRRD, DICOM series), geometry, LUNA16 CSVs."""
