"""Datasets and the input pipeline.

  dataset_info.py    which dataset a name means (tfds, bundled, folder:PATH), its classes
                     and splits; prepare_dataset
  input_pipeline.py  decode, crop, augment, batch (tf.data), train and eval iterators
  randaugment.py     RandAugment (TF ops)
  mixup.py           Mixup / CutMix and label smoothing on device
  digits.py          the bundled "digits" tfds builder (registered with tfds when imported)
  folder.py          "folder:PATH": a folder of your own images, on tfds' ImageFolder
  image_check.py     every image of a folder decoded once, untrusted files bounded
"""
