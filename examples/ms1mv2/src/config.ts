/**
 * ms1mv2_r100 (`recognition/arcface_torch/configs/ms1mv2_r100.py`): ArcFace (1.0, 0.5, 0.0), 85742 identities
 * (faces_emore), 5822653 images, iResNet-100, 20 epochs, sample rate 1.0 (model parallel).
 */
export default {
  margin_list: [1.0, 0.5, 0.0],
  network: 'r100',
  resume: false,
  output: null,
  embedding_size: 512,
  sample_rate: 1.0,
  fp16: true,
  momentum: 0.9,
  weight_decay: 5e-4,
  batch_size: 128,
  lr: 0.1,
  verbose: 2000,
  dali: false,
  rec: '/train_tmp/faces_emore',
  num_classes: 85742,
  num_image: 5822653,
  num_epoch: 20,
  warmup_epoch: 0,
  val_targets: ['lfw', 'cfp_fp', 'agedb_30'],
};
