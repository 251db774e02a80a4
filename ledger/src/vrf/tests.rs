use super::*;

/// RFC 9381 Appendix B.3: `SK`, `PK`, `alpha`, `H`, `pi`, `beta`.
const VECTORS: [[&str; 6]; 3] = [
    [
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "91bbed02a99461df1ad4c6564a5f5d829d0b90cfc7903e7a5797bd658abf3318",
        "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805",
        "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae",
    ],
    [
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "5b659fc3d4e9263fd9a4ed1d022d75eaacc20df5e09f9ea937502396598dc551",
        "f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02",
        "eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031",
    ],
    [
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "bf4339376f5542811de615e3313d2b36f6f53c0acfebb482159711201192576a",
        "9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf8096bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a2d41b00b05081ed0f58ee5e31b3a970e",
        "645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c452118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f",
    ],
];

fn bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

#[test]
fn the_rfc_9381_vectors_prove_and_verify() {
    for [sk, pk, alpha, h, pi, beta] in VECTORS {
        let secret = VrfSecretKey::from_seed(bytes(sk).try_into().unwrap());
        assert_eq!(hex::encode(secret.public().to_bytes()), pk);
        let alpha = bytes(alpha);
        let public = VrfPublicKey::from_bytes(&bytes(pk)).unwrap();
        assert_eq!(
            hex::encode(
                encode_to_curve(&public.to_bytes(), &alpha)
                    .compress()
                    .to_bytes()
            ),
            h
        );
        let (proof, output) = secret.prove(&alpha);
        assert_eq!(hex::encode(proof.to_bytes()), pi);
        assert_eq!(hex::encode(output.0), beta);
        let given = VrfProof::from_bytes(&bytes(pi)).unwrap();
        assert_eq!(public.verify(&alpha, &given), Ok(output));
        assert_eq!(given.output(), Ok(output));
    }
}

#[test]
fn a_proof_verifies_for_its_own_input_and_key_only() {
    let [sk, pk, alpha, _, pi, _] = VECTORS[2];
    let public = VrfPublicKey::from_bytes(&bytes(pk)).unwrap();
    let alpha = bytes(alpha);
    let proof = VrfProof::from_bytes(&bytes(pi)).unwrap();
    assert_eq!(public.verify(b"other", &proof), Err(VrfError::InvalidProof));
    let other = VrfPublicKey::from_bytes(&bytes(VECTORS[0][1])).unwrap();
    assert_eq!(other.verify(&alpha, &proof), Err(VrfError::InvalidProof));
    // Every single-bit change of the proof is refused.
    for bit in 0..PROOF_LEN * 8 {
        let mut changed = proof.to_bytes();
        changed[bit / 8] ^= 1 << (bit % 8);
        let changed = VrfProof::from_bytes(&changed).unwrap();
        assert!(public.verify(&alpha, &changed).is_err(), "bit {bit}");
    }
    // `s` not below the group order, a proof of the wrong length, all zeros.
    let mut big_s = proof.to_bytes();
    big_s[48..].fill(0xff);
    assert_eq!(
        public.verify(&alpha, &VrfProof::from_bytes(&big_s).unwrap()),
        Err(VrfError::MalformedProof)
    );
    assert_eq!(
        VrfProof::from_bytes(&proof.to_bytes()[..79]),
        Err(VrfError::MalformedProof)
    );
    assert!(public.verify(&alpha, &VrfProof([0; PROOF_LEN])).is_err());
    // The secret seed proves the same output every time, and another for another input.
    let secret = VrfSecretKey::from_seed(bytes(sk).try_into().unwrap());
    assert_eq!(secret.prove(&alpha), secret.prove(&alpha));
    assert_ne!(secret.prove(b"alice").1, secret.prove(b"alicf").1);
}

#[test]
fn small_order_and_malformed_public_keys_are_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        VrfPublicKey::from_bytes(&identity),
        Err(VrfError::InvalidKey)
    );
    assert_eq!(
        VrfPublicKey::from_bytes(&[0u8; 31]),
        Err(VrfError::InvalidKey)
    );
    // A key spelled with y + p instead of y (RFC 8032 decoding refuses it; the curve library
    // alone would not): 2^255 - 1 is y = 18 plus the prime.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[31] = 0x7f;
    assert_eq!(
        VrfPublicKey::from_bytes(&non_canonical),
        Err(VrfError::InvalidKey)
    );
    // A valid key still parses and spells itself the same way.
    let key = VrfSecretKey::from_seed([1; 32]).public().to_bytes();
    assert_eq!(VrfPublicKey::from_bytes(&key).unwrap().to_bytes(), key);
}
